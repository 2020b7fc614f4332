"""Protobuf messages to the pipeline's values and back: a request becomes a `Call` with a native Ollama
body, native reply objects become `TokenChunk`s, and the status views' dicts become typed answers.

Pure: no server, no I/O. Everything a client can get wrong (a bad priority, a negative budget, a
context size that is not configured, options that are not JSON-shaped) is refused with `BadRequest`,
which the front answers INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

from ollama_proxy.adapters.grpc.generated import ollama_proxy_pb2 as pb
from ollama_proxy.core.ollama_api import SizeMode, context_choice
from ollama_proxy.core.operations import Dialect, Operation
from ollama_proxy.core.routing.headers import parse_route_fields
from ollama_proxy.core.routing.state import RouteRequest
from ollama_proxy.errors import BadRequest, UpstreamError
from ollama_proxy.service.reply import Call, CallRecord

_PATHS = {Operation.GENERATE: "/api/generate", Operation.CHAT: "/api/chat", Operation.EMBED: "/api/embed"}


def generate_call(request: pb.GenerateRequest, request_id: str, sizes: tuple[int, ...]) -> Call:
    body: dict[str, Any] = {"model": _model(request.model), "prompt": request.prompt, "stream": True}
    if request.system:
        body["system"] = request.system
    return _call(Operation.GENERATE, body, request, request_id, sizes)


def chat_call(request: pb.ChatRequest, request_id: str, sizes: tuple[int, ...]) -> Call:
    if not request.messages:
        raise BadRequest("messages: at least one message is required")
    messages = [{"role": m.role or "user", "content": m.content} for m in request.messages]
    body: dict[str, Any] = {"model": _model(request.model), "messages": messages, "stream": True}
    return _call(Operation.CHAT, body, request, request_id, sizes)


def embed_call(request: pb.EmbedRequest, request_id: str, sizes: tuple[int, ...]) -> Call:
    if not request.input:
        raise BadRequest("input: at least one text to embed is required")
    body: dict[str, Any] = {"model": _model(request.model), "input": list(request.input)}
    return _call(Operation.EMBED, body, request, request_id, sizes)


def listing_call(request_id: str) -> Call:
    """The merged model list, asked for as the HTTP front asks for /api/tags."""
    return Call(operation=Operation.TAGS, dialect=Dialect.OLLAMA, method="GET", path="/api/tags",
                request_id=request_id)


def route_hints(annotations: pb.Annotations) -> RouteRequest:
    """The annotations as routing hints; zero and empty mean unset, as in proto3 itself."""
    a = annotations
    return parse_route_fields({
        "latency_critical": a.latency_critical, "power_efficient": a.power_efficient,
        "max_latency_ms": a.max_latency_ms or None, "max_power_watts": a.max_power_watts or None,
        "priority": a.priority or None, "target_backend": a.target_backend or None,
        "media_type": a.media_type or None})


def context_size(text: str, sizes: tuple[int, ...]) -> tuple[SizeMode, int | None]:
    """`context`: "auto" (or empty) sizes the call; a configured size fixes `num_ctx` to it."""
    choice = context_choice(text.strip().lower() or "auto", sizes)
    if choice is None:
        raise BadRequest(f"context: expected auto or one of {', '.join(map(str, sizes))} "
                         f"(context.sizes), got {text!r}")
    return choice


def native_options(options: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct's values as Ollama reads them: protobuf has only doubles, and Ollama refuses 4.0 where
    an integer option (num_predict, seed, num_ctx) is expected."""
    return {key: _integral(value) for key, value in json_format.MessageToDict(options).items()}


def token_chunk(answer: Mapping[str, Any], operation: Operation) -> pb.TokenChunk:
    """One native stream object as a chunk: the generated text, whether it is the last, and the counts
    the last one carries. The front adds what the proxy knows (backend, timings, num_ctx)."""
    source = answer.get("message") if operation is Operation.CHAT else answer
    if not isinstance(source, Mapping):
        source = {}
    token = source.get("content") if operation is Operation.CHAT else source.get("response")
    thinking = source.get("thinking")
    chunk = pb.TokenChunk(token=token if isinstance(token, str) else "",
                          thinking=thinking if isinstance(thinking, str) else "",
                          done=answer.get("done") is True)
    if chunk.done:
        chunk.prompt_eval_count = _count(answer.get("prompt_eval_count"))
        chunk.eval_count = _count(answer.get("eval_count"))
        reason = answer.get("done_reason")
        chunk.done_reason = reason if isinstance(reason, str) else ""
    return chunk


def decided(record: CallRecord) -> tuple[str, str, int]:
    """The backend, the routing reason and the num_ctx the pipeline chose for a call."""
    reason = record.routing.reason if record.routing is not None else ""
    num_ctx = record.sizing.num_ctx if record.sizing is not None else 0
    return record.backend_id or "", reason, num_ctx


def embed_response(answer: Mapping[str, Any], record: CallRecord, total_ms: float) -> pb.EmbedResponse:
    backend, reason, _ = decided(record)
    vectors = answer.get("embeddings")
    if not isinstance(vectors, list) or not all(isinstance(v, list) for v in vectors):
        raise UpstreamError(backend, f"its embed answer has no list of embeddings: {str(answer)[:200]}")
    model = answer.get("model")
    return pb.EmbedResponse(model=model if isinstance(model, str) else "",
                            embeddings=[pb.Embedding(values=v) for v in vectors],
                            prompt_eval_count=_count(answer.get("prompt_eval_count")),
                            backend=backend, routing_reason=reason, total_ms=total_ms)


def models_response(listing: Mapping[str, Any], backend_id: str | None) -> pb.ListModelsResponse:
    """`/api/tags` as typed models; a single backend's own list names no backends, so it is named here."""
    models = []
    for entry in listing.get("models") or []:
        details = entry.get("details") or {}
        backends = entry.get("backends") or ([backend_id] if backend_id else [])
        models.append(pb.Model(name=str(entry.get("name") or entry.get("model") or ""),
                               size=_count(entry.get("size")), digest=str(entry.get("digest") or ""),
                               family=str(details.get("family") or ""),
                               parameter_size=str(details.get("parameter_size") or ""),
                               quantization_level=str(details.get("quantization_level") or ""),
                               backends=[str(b) for b in backends]))
    return pb.ListModelsResponse(models=models)


def backends_response(view: Mapping[str, Any]) -> pb.ListBackendsResponse:
    """`StatusViews.backends()` typed, each backend's whole status kept in `details`."""
    backends = []
    for b in view["backends"]:
        traits = b.get("characteristics") or {}
        details = struct_pb2.Struct()
        details.update(b)
        backends.append(pb.Backend(
            id=b["id"], name=b.get("name") or "", type=b.get("type") or "", hardware=b.get("hardware") or "",
            endpoint=b.get("endpoint") or "", enabled=bool(b.get("enabled")), reachable=bool(b.get("reachable")),
            last_error=b.get("last_error") or "", models=b.get("models") or [], breaker=b.get("breaker") or "",
            in_flight=_count(b.get("in_flight")), queue={k: _count(v) for k, v in (b.get("queue") or {}).items()},
            power_watts=float(traits.get("power_watts") or 0), avg_latency_ms=float(traits.get("avg_latency_ms") or 0),
            max_concurrent=_count(traits.get("max_concurrent")),
            thermal_level=(b.get("thermal") or {}).get("level") or "", details=details))
    return pb.ListBackendsResponse(mode=view["mode"], mode_reason=view.get("mode_reason") or "", backends=backends)


def efficiency(view: Mapping[str, Any]) -> pb.Efficiency:
    return pb.Efficiency(mode=view["mode"], effective_mode=view["effective_mode"], reason=view.get("reason") or "",
                         modes=list(view.get("modes") or []))


def _call(operation: Operation, body: dict[str, Any], request: pb.GenerateRequest | pb.ChatRequest | pb.EmbedRequest,
          request_id: str, sizes: tuple[int, ...]) -> Call:
    if request.HasField("options"):
        body["options"] = native_options(request.options)
    mode, size = context_size(request.context, sizes)
    return Call(operation=operation, dialect=Dialect.OLLAMA, method="POST", path=_PATHS[operation],
                request_id=request_id, model=body["model"], hints=route_hints(request.annotations),
                size_mode=mode, fixed_size=size, body=body)


def _model(name: str) -> str:
    if not name.strip():
        raise BadRequest("model: a model name is required")
    return name


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
