from __future__ import annotations

import base64
import random
import struct
from typing import Any

import pytest

from ollama_proxy.core.openai import (
    ReplyContext,
    RequestKind,
    chat_completion,
    embeddings_list,
    error_from_native,
    error_type_for_status,
    find_model,
    models_list,
    new_completion_id,
    openai_error,
    reply_from_native,
    text_completion,
)

CHAT = ReplyContext(RequestKind.CHAT, "qwen3")
DONE = {"done": True, "done_reason": "stop", "prompt_eval_count": 142, "eval_count": 19}


def test_chat_completion_shape() -> None:
    native = {"model": "qwen3", "message": {"role": "assistant", "content": "Hello", "thinking": "hm"},
              **DONE}
    reply = chat_completion(native, CHAT, completion_id="chatcmpl-abc", created=1787390000)
    assert reply == {
        "id": "chatcmpl-abc", "object": "chat.completion", "created": 1787390000, "model": "qwen3",
        "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello", "reasoning": "hm"},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 142, "completion_tokens": 19, "total_tokens": 161},
    }


def test_chat_completion_with_tool_calls() -> None:
    # Reference 8.4: a native tool call; arguments become a JSON string, reason becomes tool_calls.
    native = {"message": {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_k3v9q2zd",
         "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Oslo"}}},
        {"function": {"index": 1, "name": "get_time", "arguments": {}}}]}, **DONE}
    reply = chat_completion(native, CHAT, completion_id="chatcmpl-0123456789abcdef", created=1)
    message = reply["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {"id": "call_k3v9q2zd", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        {"id": "call_0123456789ab_1", "type": "function",
         "function": {"name": "get_time", "arguments": "{}"}},
    ]
    assert reply["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("done_reason,calls,expected", [
    pytest.param("stop", False, "stop", id="stop"),
    pytest.param("length", False, "length", id="length"),
    pytest.param("length", True, "length", id="length-wins-over-tools"),
    pytest.param("stop", True, "tool_calls", id="tool-calls"),
    pytest.param(None, False, "stop", id="missing"),
    pytest.param("load", False, "stop", id="load"),
])
def test_finish_reason(done_reason: str | None, calls: bool, expected: str) -> None:
    message: dict[str, Any] = {"content": "x"}
    if calls:
        message["tool_calls"] = [{"function": {"name": "f", "arguments": {}}}]
    native = {"message": message, "done": True, "done_reason": done_reason}
    reply = chat_completion(native, CHAT, completion_id="c-1", created=0)
    assert reply["choices"][0]["finish_reason"] == expected


def test_usage_missing_counts_are_zero() -> None:
    reply = chat_completion({"message": {"content": ""}, "done": True}, CHAT, completion_id="c", created=0)
    assert reply["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_chat_logprobs_wrapped_in_content() -> None:
    entries = [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}]
    native = {"message": {"content": "Hi"}, "logprobs": entries, **DONE}
    reply = chat_completion(native, CHAT, completion_id="c", created=0)
    assert reply["choices"][0]["logprobs"] == {"content": entries}


def test_text_completion_shape() -> None:
    native = {"response": "Seven.", "done": True, "done_reason": "length", "prompt_eval_count": 31,
              "eval_count": 3, "context": [1, 2]}
    reply = text_completion(native, ReplyContext(RequestKind.COMPLETION, "llama3.2"),
                            completion_id="cmpl-1", created=5)
    assert reply == {"id": "cmpl-1", "object": "text_completion", "created": 5, "model": "llama3.2",
                     "system_fingerprint": "fp_ollama",
                     "choices": [{"index": 0, "text": "Seven.", "logprobs": None, "finish_reason": "length"}],
                     "usage": {"prompt_tokens": 31, "completion_tokens": 3, "total_tokens": 34}}


EMBED = {"model": "nomic", "embeddings": [[0.5, -0.25], [1.0, 0.0]], "prompt_eval_count": 8}


def test_embeddings_float() -> None:
    reply = embeddings_list(EMBED, ReplyContext(RequestKind.EMBEDDING, "nomic"))
    assert reply == {"object": "list", "model": "nomic", "usage": {"prompt_tokens": 8, "total_tokens": 8},
                     "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25]},
                              {"object": "embedding", "index": 1, "embedding": [1.0, 0.0]}]}


def test_embeddings_base64_is_little_endian_float32() -> None:
    reply = embeddings_list(EMBED, ReplyContext(RequestKind.EMBEDDING, "nomic", encoding_format="base64"))
    raw = base64.b64decode(reply["data"][0]["embedding"])
    assert raw == struct.pack("<2f", 0.5, -0.25)
    assert list(struct.unpack("<2f", raw)) == [0.5, -0.25]


def test_reply_from_native_dispatches_by_kind() -> None:
    kinds = {RequestKind.CHAT: "chat.completion", RequestKind.COMPLETION: "text_completion",
             RequestKind.EMBEDDING: "list"}
    native = {"message": {"content": ""}, "response": "", "embeddings": [], "done": True}
    for kind, obj in kinds.items():
        reply = reply_from_native(native, ReplyContext(kind, "m"), completion_id="x", created=0)
        assert reply["object"] == obj


def test_new_completion_id_is_seeded_and_prefixed() -> None:
    first = new_completion_id(RequestKind.CHAT, random.Random(1))
    assert first == new_completion_id(RequestKind.CHAT, random.Random(1))
    assert first.startswith("chatcmpl-") and len(first) == len("chatcmpl-") + 24
    assert new_completion_id(RequestKind.COMPLETION, random.Random(1)).startswith("cmpl-")
    rng = random.Random(2)
    assert len({new_completion_id(RequestKind.CHAT, rng) for _ in range(1000)}) == 1000


@pytest.mark.parametrize("status,kind", [
    pytest.param(400, "invalid_request_error", id="400"),
    pytest.param(401, "authentication_error", id="401"),
    pytest.param(404, "not_found_error", id="404"),
    pytest.param(429, "rate_limit_error", id="429"),
    pytest.param(500, "api_error", id="500"),
    pytest.param(503, "api_error", id="503"),
])
def test_openai_error_types(status: int, kind: str) -> None:
    assert error_type_for_status(status) == kind
    assert openai_error("boom", status) == (status, {"error": {"message": "boom", "type": kind,
                                                               "param": None, "code": None}})


@pytest.mark.parametrize("status,native,message", [
    pytest.param(404, {"error": "model 'nope' not found"}, "model 'nope' not found", id="ollama-404"),
    pytest.param(503, {"error": "server busy"}, "server busy", id="busy-keeps-status"),
    pytest.param(502, b"garbage", "the backend answered with HTTP status 502", id="unparsed"),
])
def test_error_from_native(status: int, native: Any, message: str) -> None:
    got_status, body = error_from_native(status, native)
    assert got_status == status
    assert body["error"]["message"] == message
    assert body["error"]["type"] == error_type_for_status(status)


TAGS = {"models": [
    {"name": "llama3.2:latest", "model": "llama3.2:latest", "modified_at": "2026-08-01T12:00:00.123456789Z"},
    {"name": "jmorgan/tiny:1b", "model": "jmorgan/tiny:1b", "modified_at": "2026-08-01T14:00:00+02:00"},
    {"name": "odd", "modified_at": "not a date"},
]}


def test_models_list() -> None:
    assert models_list(TAGS) == {"object": "list", "data": [
        {"id": "llama3.2:latest", "object": "model", "created": 1785585600, "owned_by": "library"},
        {"id": "jmorgan/tiny:1b", "object": "model", "created": 1785585600, "owned_by": "jmorgan"},
        {"id": "odd", "object": "model", "created": 0, "owned_by": "library"},
    ]}


def test_models_list_empty_is_a_list_not_null() -> None:
    assert models_list({"models": None}) == {"object": "list", "data": []}


@pytest.mark.parametrize("wanted,found", [
    pytest.param("llama3.2", "llama3.2:latest", id="implicit-latest"),
    pytest.param("LLAMA3.2:latest", "llama3.2:latest", id="case-insensitive"),
    pytest.param("jmorgan/tiny:1b", "jmorgan/tiny:1b", id="namespaced"),
    pytest.param("jmorgan/tiny", None, id="wrong-tag"),
])
def test_find_model(wanted: str, found: str | None) -> None:
    model = find_model(TAGS, wanted)
    assert (model["id"] if model else None) == found
