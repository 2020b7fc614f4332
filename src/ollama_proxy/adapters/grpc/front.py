"""The gRPC front of the pipeline: `ollama_proxy.OllamaProxy` RPCs in, `Call`s to the pipeline, their
`Reply`s back out as protobuf messages and gRPC statuses.

A streamed reply is read as native objects (`service.native_objects`) and sent one `TokenChunk` per
object; the last carries what the pipeline decided (backend, routing reason, num_ctx) and the timings.
Every refusal becomes a status (`status.py`); it is sent after the pipeline's context is left, so the
admission slot and the upstream request are released first. A cancelled or expired RPC cancels the
handler's task, which leaves `Pipeline.run` with the cancellation and so cancels the upstream request.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from ollama_proxy.adapters.grpc import messages
from ollama_proxy.adapters.grpc.generated import ollama_proxy_pb2 as pb
from ollama_proxy.adapters.grpc.generated.ollama_proxy_pb2_grpc import OllamaProxyServicer
from ollama_proxy.adapters.grpc.status import (
    RpcRefusal,
    broken_stream,
    refusal_for_error,
    refusal_for_reply,
)
from ollama_proxy.config.schema import Config
from ollama_proxy.core.operations import Operation
from ollama_proxy.core.streams import StreamFailure
from ollama_proxy.errors import OllamaProxyError
from ollama_proxy.service.native_objects import native_objects
from ollama_proxy.service.pipeline import Pipeline
from ollama_proxy.service.reply import Call, CallRecord, Reply
from ollama_proxy.service.status import StatusViews

log = logging.getLogger("ollama_proxy.grpc")

Answer = TypeVar("Answer")
if TYPE_CHECKING:  # grpc's classes are generic only in their stubs
    Context = grpc.aio.ServicerContext[Any, Any]
_CUT_SHORT = "the stream ended without its final message"


class GrpcFront(OllamaProxyServicer):
    def __init__(self, config: Config, pipeline: Pipeline, views: StatusViews, *,
                 observe: Callable[[str, int, float], None] = lambda backend, status, seconds: None,
                 on_internal_error: Callable[[], None] = lambda: None) -> None:
        self.pipeline = pipeline
        self.views = views
        self.in_flight = 0  # RPCs being handled now: what a shutdown drains
        self._sizes = config.context.sizes
        self._observe = observe
        self._on_internal_error = on_internal_error

    def follow(self, config: Config, pipeline: Pipeline, views: StatusViews) -> None:
        """New RPCs go to these (a configuration reload); RPCs under way keep theirs."""
        self.pipeline, self.views, self._sizes = pipeline, views, config.context.sizes

    # The streamed RPCs write their chunks (`context.write`) from inside the pipeline's `respond`, where the
    # admission slot and the upstream reply are held: a handler that yields could not yield from there.
    # grpc.aio takes either form of a server-streaming handler; the generated stub knows only the generator.
    async def Generate(self, request: pb.GenerateRequest, context: Context) -> None:  # type: ignore[override]
        await self._stream(context, "Generate", lambda rid: messages.generate_call(request, rid, self._sizes))

    async def Chat(self, request: pb.ChatRequest, context: Context) -> None:  # type: ignore[override]
        await self._stream(context, "Chat", lambda rid: messages.chat_call(request, rid, self._sizes))

    async def Embed(self, request: pb.EmbedRequest, context: Context) -> pb.EmbedResponse:
        return await self._whole(context, "Embed", lambda rid: messages.embed_call(request, rid, self._sizes),
                                 lambda answer, rpc: messages.embed_response(answer, rpc.record, rpc.elapsed_ms()))

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        return await self._whole(context, "ListModels", messages.listing_call,
                                 lambda answer, rpc: messages.models_response(answer, rpc.record.backend_id))

    async def ListBackends(self, request: pb.ListBackendsRequest, context: Context) -> pb.ListBackendsResponse:
        return messages.backends_response(self.views.backends())

    async def GetEfficiency(self, request: pb.GetEfficiencyRequest, context: Context) -> pb.Efficiency:
        return messages.efficiency(self.views.efficiency())

    async def SetEfficiency(self, request: pb.SetEfficiencyRequest, context: Context) -> pb.Efficiency:
        try:
            return messages.efficiency(self.views.set_mode(request.mode))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"mode: {exc}")

    async def _stream(self, context: Context, method: str, call_of: Callable[[str], Call]) -> None:
        refusal: RpcRefusal | None = None
        async with _Rpc(self, context, method) as rpc:
            try:
                call = rpc.call = call_of(rpc.request_id)
                refusal = await self.pipeline.run(call, partial(_write_chunks, rpc, call.operation), rpc.record)
            except Exception as exc:
                refusal = rpc.failed(exc)
            rpc.refusal = refusal
        if refusal is not None:
            # The status is set and the handler returns, rather than `abort`: an abort right after the
            # last writes could overtake them, and the client lost tokens it had been sent.
            context.set_code(refusal.code)
            context.set_details(refusal.details)
            context.set_trailing_metadata(refusal.trailing_metadata)

    async def _whole(self, context: Context, method: str, call_of: Callable[[str], Call],
                     render: Callable[[Mapping[str, Any], _Rpc], Answer]) -> Answer:
        async with _Rpc(self, context, method) as rpc:
            try:
                rpc.call = call_of(rpc.request_id)
                answered = await self.pipeline.run(rpc.call, partial(_render, rpc, render), rpc.record)
                if not isinstance(answered, RpcRefusal):
                    return answered
                refusal = answered
            except Exception as exc:
                refusal = rpc.failed(exc)
            rpc.refusal = refusal
        await context.abort(refusal.code, refusal.details, refusal.trailing_metadata)


async def _write_chunks(rpc: _Rpc, operation: Operation, reply: Reply) -> RpcRefusal | None:
    """A streamed reply written to the RPC, one `TokenChunk` per native object, the last with what was
    decided and the timings; the refusal the stream ended with, if it did not end well."""
    if reply.status >= 400:
        return await _refusal_of(reply)
    async with contextlib.aclosing(native_objects(reply)) as answers:
        first = True
        async for answer in answers:
            if isinstance(answer, StreamFailure) or "error" in answer:
                # An error line is how Ollama itself ends a stream that failed.
                return broken_stream(answer.reason if isinstance(answer, StreamFailure) else str(answer["error"]))
            chunk = messages.token_chunk(answer, operation)
            if first:
                chunk.ttft_ms, first = rpc.elapsed_ms(), False
            if chunk.done:
                chunk.backend, chunk.routing_reason, chunk.num_ctx = messages.decided(rpc.record)
                chunk.total_ms = rpc.elapsed_ms()
                await rpc.context.write(chunk)
                return None
            await rpc.context.write(chunk)
    return broken_stream(rpc.record.failure or _CUT_SHORT)


async def _render(rpc: _Rpc, render: Callable[[Mapping[str, Any], _Rpc], Answer], reply: Reply) -> Answer | RpcRefusal:
    """A whole reply's one object rendered as the RPC's answer, or the refusal it amounts to."""
    if reply.status >= 400:
        return await _refusal_of(reply)
    answer = await _first_object(reply)
    if isinstance(answer, StreamFailure):
        return broken_stream(answer.reason)
    return render(answer, rpc)


async def _refusal_of(reply: Reply) -> RpcRefusal:
    """The status for a reply whose status is an error; its body is read for the message."""
    return refusal_for_reply(reply.status, await _first_object(reply), reply.headers.get("Retry-After"))


async def _first_object(reply: Reply) -> dict[str, Any] | StreamFailure:
    """A whole reply's one object (a stream's first)."""
    async with contextlib.aclosing(native_objects(reply)) as answers:
        async for answer in answers:
            return answer
    return StreamFailure("the backend's answer was empty")


class _Rpc:
    """One RPC's bookkeeping: its request id, the pipeline's record, the count of RPCs in flight, and the
    log line and metrics when it ends."""

    __slots__ = ("call", "context", "front", "method", "record", "refusal", "request_id", "started")

    def __init__(self, front: GrpcFront, context: Context, method: str) -> None:
        self.front, self.context, self.method = front, context, method
        given = dict(context.invocation_metadata() or ()).get("x-request-id")
        self.request_id = given if isinstance(given, str) and given else str(uuid.uuid4())
        self.started = time.perf_counter()
        self.record = CallRecord(started=self.started)
        self.call: Call | None = None
        self.refusal: RpcRefusal | None = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def failed(self, exc: Exception) -> RpcRefusal:
        """The refusal for an exception out of the pipeline; an unexpected one is logged with its traceback
        and counted, and the server goes on serving."""
        if isinstance(exc, OllamaProxyError):
            return refusal_for_error(exc)
        log.error("%s unexpected error in %s", self.request_id, self.method, exc_info=exc)
        self.front._on_internal_error()
        return RpcRefusal(grpc.StatusCode.INTERNAL, f"internal error in the proxy ({type(exc).__name__}); "
                                                    f"request id {self.request_id}", 500)

    async def __aenter__(self) -> _Rpc:
        self.front.in_flight += 1
        await self.context.send_initial_metadata((("x-request-id", self.request_id),))
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.front.in_flight -= 1
        if kind is not None:
            status, outcome = 499, "CANCELLED (client went away)"
        elif self.refusal is not None:
            status, outcome = self.refusal.status, f"{self.refusal.code.name}: {self.refusal.details}"
        else:
            status, outcome = 200, "OK"
        record, elapsed = self.record, time.perf_counter() - self.started
        backend = record.backend_id or "-"
        self.front._observe(backend, status, elapsed)
        queued = f" queued={record.queued_ms:.1f}ms" if record.queued_ms >= 0.1 else ""
        log.info("%s gRPC %s model=%s backend=%s %s %.1fms%s", self.request_id, self.method,
                 (self.call.model if self.call else None) or "-", backend, outcome, elapsed * 1000, queued)


