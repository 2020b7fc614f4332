"""The gRPC front's pure parts: protobuf requests to `Call`s, native objects to messages, errors to statuses,
and the API-key check. No server, no sockets."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2

from ollama_proxy.adapters.grpc import messages
from ollama_proxy.adapters.grpc.generated import ollama_proxy_pb2 as pb
from ollama_proxy.adapters.grpc.server import ApiKeyCheck
from ollama_proxy.adapters.grpc.status import (
    RETRY_AFTER_KEY,
    broken_stream,
    code_for_status,
    refusal_for_error,
    refusal_for_reply,
)
from ollama_proxy.core.admission import Priority
from ollama_proxy.core.context.counting import CountMethod
from ollama_proxy.core.context.sizing import SizeDecision, SizeReason
from ollama_proxy.core.ollama_api import SizeMode
from ollama_proxy.core.operations import Operation
from ollama_proxy.errors import BadRequest, NoBackendAvailable, OllamaProxyError, UpstreamConnectError, UpstreamTimeout
from ollama_proxy.service.reply import CallRecord

SIZES = (2048, 4096, 8192)


@pytest.mark.parametrize(("status", "text", "code"), [
    (400, "", grpc.StatusCode.INVALID_ARGUMENT),
    (401, "", grpc.StatusCode.UNAUTHENTICATED),
    (404, "model 'x' not found", grpc.StatusCode.NOT_FOUND),
    (413, "", grpc.StatusCode.INVALID_ARGUMENT),
    (429, "", grpc.StatusCode.RESOURCE_EXHAUSTED),
    (418, "", grpc.StatusCode.FAILED_PRECONDITION),
    (500, "llama runner process has terminated", grpc.StatusCode.INTERNAL),
    (500, 'option "num_ctx" must be of type integer', grpc.StatusCode.INVALID_ARGUMENT),
    (501, "", grpc.StatusCode.UNIMPLEMENTED),
    (502, "", grpc.StatusCode.UNAVAILABLE),
    (503, "server busy", grpc.StatusCode.UNAVAILABLE),
    (504, "", grpc.StatusCode.DEADLINE_EXCEEDED),
    (599, "", grpc.StatusCode.INTERNAL),
])
def test_http_statuses_map_to_grpc_codes(status: int, text: str, code: grpc.StatusCode) -> None:
    assert code_for_status(status, text) is code


def test_a_full_queue_is_resource_exhausted_and_says_when_to_retry() -> None:
    refusal = refusal_for_error(NoBackendAvailable("backend 'cpu' is busy: queue full", {"cpu": "queue full"},
                                                   status=429, retry_after_s=3))
    assert refusal.code is grpc.StatusCode.RESOURCE_EXHAUSTED and refusal.status == 429
    assert refusal.trailing_metadata == ((RETRY_AFTER_KEY, "3"),)


@pytest.mark.parametrize(("error", "code"), [
    (NoBackendAvailable("model 'ghost:latest' not found on any backend", status=404), grpc.StatusCode.NOT_FOUND),
    (NoBackendAvailable("no backend satisfies the request: power"), grpc.StatusCode.UNAVAILABLE),
    (BadRequest("X-Priority: unknown priority 'urgent'"), grpc.StatusCode.INVALID_ARGUMENT),
    (UpstreamConnectError("cpu", "connection refused"), grpc.StatusCode.UNAVAILABLE),
    (UpstreamTimeout("cpu", "no answer within 300 s"), grpc.StatusCode.DEADLINE_EXCEEDED),
])
def test_errors_carry_their_code_and_no_retry_hint_unless_given(error: OllamaProxyError, code: grpc.StatusCode) -> None:
    refusal = refusal_for_error(error)
    assert refusal.code is code and refusal.trailing_metadata == ()


def test_header_names_in_messages_become_the_annotation_fields() -> None:
    refusal = refusal_for_error(NoBackendAvailable("unknown X-Target-Backend 'gpu9'; configured backends: cpu",
                                                   status=400))
    assert refusal.details == "unknown target_backend 'gpu9'; configured backends: cpu"


def test_an_error_reply_is_mapped_from_its_status_and_body() -> None:
    refusal = refusal_for_reply(404, {"error": "model 'x' not found"})
    assert (refusal.code, refusal.details) == (grpc.StatusCode.NOT_FOUND, "model 'x' not found")
    openai_shaped = refusal_for_reply(503, {"error": {"message": "busy"}}, retry_after="2")
    assert (openai_shaped.details, openai_shaped.trailing_metadata) == ("busy", ((RETRY_AFTER_KEY, "2"),))
    assert "answered 500" in refusal_for_reply(500, ["not", "an", "object"]).details
    assert broken_stream("reset").code is grpc.StatusCode.UNAVAILABLE


def test_generate_request_becomes_a_sized_native_call() -> None:
    options = struct_pb2.Struct()
    options.update({"temperature": 0.5, "num_predict": 4, "stop": ["a"], "nested": {"seed": 1.0}})
    request = pb.GenerateRequest(model="llama3.2", prompt="Explain AI", system="brief", options=options,
                                 annotations=pb.Annotations(latency_critical=True, priority="high",
                                                            max_power_watts=20, target_backend="npu"))
    call = messages.generate_call(request, "rid", SIZES)
    assert (call.operation, call.path, call.method, call.request_id) == (Operation.GENERATE, "/api/generate",
                                                                         "POST", "rid")
    assert call.body == {"model": "llama3.2", "prompt": "Explain AI", "stream": True, "system": "brief",
                         "options": {"temperature": 0.5, "num_predict": 4, "stop": ["a"], "nested": {"seed": 1}}}
    assert isinstance(call.body["options"]["num_predict"], int)
    assert (call.size_mode, call.fixed_size) == (SizeMode.AUTO, None)
    hints = call.hints
    assert (hints.latency_critical, hints.priority, hints.max_power_watts, hints.target) == (
        True, Priority.HIGH, 20.0, "npu")
    assert hints.max_latency_ms is None and not hints.power_efficient


def test_absent_options_are_not_sent() -> None:
    assert "options" not in messages.generate_call(pb.GenerateRequest(model="m", prompt="p"), "r", SIZES).body


@pytest.mark.parametrize(("text", "expected"), [
    ("", (SizeMode.AUTO, None)), ("auto", (SizeMode.AUTO, None)), (" AUTO ", (SizeMode.AUTO, None)),
    ("4096", (SizeMode.FIXED, 4096)),
])
def test_context_is_auto_or_a_configured_size(text: str, expected: tuple[SizeMode, int | None]) -> None:
    assert messages.context_size(text, SIZES) == expected


@pytest.mark.parametrize("text", ["1000", "04096", "big", "-1"])
def test_other_contexts_are_refused_naming_the_sizes(text: str) -> None:
    with pytest.raises(BadRequest, match="context: expected auto or one of 2048, 4096, 8192"):
        messages.context_size(text, SIZES)


@pytest.mark.parametrize(("request_", "says"), [
    (pb.GenerateRequest(prompt="p"), "model: a model name is required"),
    (pb.GenerateRequest(model="m", annotations=pb.Annotations(priority="urgent")), "priority: unknown priority"),
    (pb.GenerateRequest(model="m", annotations=pb.Annotations(max_latency_ms=-1)), "max_latency_ms: expected"),
    (pb.GenerateRequest(model="m", annotations=pb.Annotations(media_type="a b")), "media_type: expected"),
])
def test_bad_arguments_are_refused_naming_the_field(request_: pb.GenerateRequest, says: str) -> None:
    with pytest.raises(BadRequest, match=says):
        messages.generate_call(request_, "r", SIZES)


def test_chat_and_embed_calls() -> None:
    chat = messages.chat_call(pb.ChatRequest(model="m", messages=[pb.Message(content="hi")], context="8192"),
                              "r", SIZES)
    assert chat.body == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    assert (chat.operation, chat.path, chat.fixed_size) == (Operation.CHAT, "/api/chat", 8192)
    with pytest.raises(BadRequest, match="messages"):
        messages.chat_call(pb.ChatRequest(model="m"), "r", SIZES)
    embed = messages.embed_call(pb.EmbedRequest(model="e", input=["a", "b"]), "r", SIZES)
    assert (embed.operation, embed.body) == (Operation.EMBED, {"model": "e", "input": ["a", "b"]})
    with pytest.raises(BadRequest, match="input"):
        messages.embed_call(pb.EmbedRequest(model="e"), "r", SIZES)


def test_native_objects_become_token_chunks() -> None:
    piece = messages.token_chunk({"response": "Hi", "done": False, "eval_count": 9}, Operation.GENERATE)
    assert (piece.token, piece.done, piece.eval_count) == ("Hi", False, 0)  # counts only on the last
    final = messages.token_chunk({"response": "", "done": True, "done_reason": "stop", "prompt_eval_count": 12,
                                  "eval_count": 30}, Operation.GENERATE)
    assert (final.done, final.prompt_eval_count, final.eval_count, final.done_reason) == (True, 12, 30, "stop")
    chat = messages.token_chunk({"message": {"role": "assistant", "content": "Yo", "thinking": "hmm"},
                                 "done": False}, Operation.CHAT)
    assert (chat.token, chat.thinking) == ("Yo", "hmm")
    odd = messages.token_chunk({"message": "not an object", "done": "yes"}, Operation.CHAT)
    assert (odd.token, odd.done) == ("", False)


def test_the_decisions_come_from_the_record() -> None:
    assert messages.decided(CallRecord()) == ("", "", 0)
    record = CallRecord(backend_id="npu", sizing=SizeDecision(4096, 100, 1424, SizeReason.FITS_BUCKET, "", False,
                                                              CountMethod.EXACT))
    assert messages.decided(record) == ("npu", "", 4096)


def test_listings_render() -> None:
    single = messages.models_response({"models": [{"name": "llama3.2:latest", "size": 5, "digest": "d",
                                                   "details": {"family": "llama"}}]}, "only")
    assert [(m.name, m.family, list(m.backends)) for m in single.models] == [("llama3.2:latest", "llama", ["only"])]
    merged = messages.models_response({"models": [{"model": "q:4b", "backends": ["a", "b"]}]}, None)
    assert list(merged.models[0].backends) == ["a", "b"]

    view = {"mode": "quiet", "mode_reason": "set", "backends": [{
        "id": "cpu", "name": "CPU", "type": "ollama", "hardware": "cpu", "endpoint": "http://x", "enabled": True,
        "reachable": False, "last_error": "refused", "models": None, "breaker": "open", "in_flight": 2,
        "queue": {"normal": 1}, "characteristics": {"power_watts": 28.0, "avg_latency_ms": 1500.0,
                                                    "max_concurrent": 4}, "thermal": {"level": "hot"}}]}
    backend = messages.backends_response(view).backends[0]
    assert (backend.id, backend.reachable, backend.breaker, backend.in_flight, dict(backend.queue)) == (
        "cpu", False, "open", 2, {"normal": 1})
    assert (backend.power_watts, backend.max_concurrent, backend.thermal_level, list(backend.models)) == (
        28.0, 4, "hot", [])
    assert backend.details["last_error"] == "refused"
    mode = messages.efficiency({"mode": "auto", "effective_mode": "quiet", "reason": "hot", "modes": ["auto"]})
    assert (mode.mode, mode.effective_mode, list(mode.modes)) == ("auto", "quiet", ["auto"])


@pytest.mark.parametrize(("metadata", "allowed"), [
    ((), False),
    ((("authorization", "Bearer k1"),), True),
    ((("authorization", "Bearer  k2 "),), True),
    ((("authorization", "k1"),), True),  # as the HTTP port: the Bearer prefix is optional
    ((("x-api-key", "k2"),), True),
    ((("x-api-key", "wrong"), ("authorization", "Bearer k1")), False),  # x-api-key wins, as over HTTP
    ((("authorization", "Bearer k3"),), False),
    ((("x-api-key", ""),), False),
])
def test_api_keys_come_from_authorization_or_x_api_key(metadata: tuple[tuple[str, str], ...], allowed: bool) -> None:
    assert ApiKeyCheck(["k1", "k2"]).allowed(metadata) is allowed
