"""The WebSocket front of the pipeline: `GET /v1/stream/ws` upgrades, and each JSON request message
becomes a `Call` to the same pipeline the HTTP front uses (routing, queueing, sizing, failover,
learning), answered as one frame per token and a final frame (`answers`).

Requests on one socket run side by side, multiplexed by `request_id`, each in its own task, at most
`max_requests` at a time. A cancel message, the client going away or the proxy closing cancels a
request's task, so `Pipeline.run` is left by cancellation and the upstream request with it.

Backpressure: every frame is sent by the task whose request it answers, awaiting aiohttp's writer,
which waits for the socket to drain once `_WRITER_LIMIT` bytes went out since the last wait. A client
that stops reading therefore stops its requests' tasks, and they stop reading their backends: what a
socket holds in the proxy is bounded by the transport's high-water mark plus `_WRITER_LIMIT` per
request in flight (`buffered_bytes` shows it), whatever the stream's length. The kernel's send buffer
is capped too (`_KERNEL_SEND_BUFFER`): left to autotuning it grows to megabytes per socket on a client
that stopped reading, and a token stream never needs that much in flight.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from functools import partial
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from ollama_proxy.adapters.http.calls import new_request_id
from ollama_proxy.adapters.http.metrics import Metrics
from ollama_proxy.adapters.http.replies import error_response
from ollama_proxy.adapters.websocket.answers import Answers, error_frame, token_of
from ollama_proxy.config.schema import Config
from ollama_proxy.core.operations import Dialect
from ollama_proxy.core.request_ids import is_uuid
from ollama_proxy.core.streams import StreamFailure
from ollama_proxy.core.websocket_messages import (
    CancelRequest,
    StreamRequest,
    known_request_id,
    parse_message,
)
from ollama_proxy.errors import BadRequest, OllamaProxyError
from ollama_proxy.service.native_objects import native_objects
from ollama_proxy.service.pipeline import Pipeline
from ollama_proxy.service.reply import Call, CallRecord, Reply
from ollama_proxy.service.tasks import TaskSet

log = logging.getLogger("ollama_proxy.access")

PATH = "/v1/stream/ws"
MAX_REQUESTS_PER_SOCKET = 16
# Ping every HEARTBEAT_S; a client that does not answer within half of it is closed.
HEARTBEAT_S = 30.0
# aiohttp's default (256 KiB) would let each sending task queue that much before waiting for the socket.
_WRITER_LIMIT = 16 * 1024
# Linux doubles it (bookkeeping); 128 KiB in flight still carries thousands of tokens a round trip.
_KERNEL_SEND_BUFFER = 64 * 1024
# A closing handshake, and the flush before it, wait for the client: one that stopped reading is cut after this.
_CLOSE_TIMEOUT_S = 2.0


class WebSocketFront:
    def __init__(self, config: Config, pipeline: Pipeline, metrics: Metrics, *,
                 max_requests: int = MAX_REQUESTS_PER_SOCKET, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.max_requests = max_requests
        self._heartbeat_s = heartbeat_s
        self._sizes = config.context.sizes
        self._max_message_bytes = config.server.max_body_bytes
        self._sockets: set[_Socket] = set()
        self._closing = False

    def follow(self, config: Config, pipeline: Pipeline) -> None:
        """New requests go to these (a configuration reload); requests under way keep theirs."""
        self.pipeline, self._sizes = pipeline, config.context.sizes

    @property
    def in_flight(self) -> int:
        """Requests being answered on every open socket: what a shutdown drains."""
        return sum(len(s.requests) for s in self._sockets)

    def buffered_bytes(self) -> int:
        """Bytes written to open sockets that their clients have not taken yet (kernel buffers aside)."""
        return sum(s.transport.get_write_buffer_size() for s in self._sockets if s.transport is not None)

    def serves(self, connection: object) -> bool:
        """Whether an HTTP connection (aiohttp's `RequestHandler`) was upgraded to one of the open sockets."""
        return any(s.connection is connection for s in self._sockets)

    def refuse_new_requests(self) -> None:
        """Shutting down: requests in flight go on, new ones are answered 503."""
        self._closing = True

    async def close_all(self) -> None:
        """Close every socket with 1001 (going away); requests still in flight are cancelled."""
        self._closing = True
        await asyncio.gather(*(asyncio.wait_for(s.ws.close(code=WSCloseCode.GOING_AWAY,
                                                           message=b"the proxy is shutting down"), _CLOSE_TIMEOUT_S)
                               for s in list(self._sockets)), return_exceptions=True)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(timeout=_CLOSE_TIMEOUT_S, heartbeat=self._heartbeat_s, compress=False,
                                   decode_text=False,
                                   max_msg_size=self._max_message_bytes, writer_limit=_WRITER_LIMIT)
        if not ws.can_prepare(request):
            return error_response(request.path, f"{PATH} speaks WebSocket only: send a GET with "
                                  "Connection: Upgrade and Upgrade: websocket", 426, headers={"Upgrade": "websocket"})
        if self._closing:
            return error_response(request.path, "the proxy is shutting down", 503)
        await ws.prepare(request)
        _cap_send_buffer(request.transport)
        sock = _Socket(ws, request.protocol, request.transport)
        self._sockets.add(sock)
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    await self._received(sock, message.data)
                elif message.type is WSMsgType.BINARY:
                    await sock.send(error_frame(None, "expected JSON text frames, got a binary frame", 400))
        finally:
            self._sockets.discard(sock)
            # The client went away or the socket closed: nothing more can be answered.
            await sock.tasks.cancel_all()
        return ws

    async def _received(self, sock: _Socket, data: str | bytes) -> None:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            await sock.send(error_frame(None, f"invalid JSON: {exc}", 400))
            return
        try:
            message = parse_message(value, self._sizes)
        except BadRequest as exc:
            await sock.send(error_frame(known_request_id(value), str(exc), exc.status))
            return
        if isinstance(message, CancelRequest):
            await self._cancel(sock, message.request_id)
        else:
            await self._start(sock, message)

    async def _cancel(self, sock: _Socket, request_id: str) -> None:
        exchange = sock.requests.get(request_id)
        if exchange is None or exchange.finished:
            await sock.send(error_frame(request_id, f"no request {request_id!r} in flight on this socket "
                                                    "(finished, or never started)", 404))
            return
        exchange.cancel_asked = True
        exchange.task.cancel()

    async def _start(self, sock: _Socket, message: StreamRequest) -> None:
        request_id = message.request_id or new_request_id()
        refusal = None
        if request_id in sock.requests:
            refusal = f"request_id {request_id!r} is already in flight on this socket", 409
        elif len(sock.requests) >= self.max_requests:
            refusal = f"{self.max_requests} requests are already in flight on this socket; wait for one", 429
        elif self._closing:
            refusal = "the proxy is shutting down", 503
        if refusal is not None:
            await sock.send(error_frame(request_id, *refusal))
            return
        call = Call(operation=message.operation, dialect=Dialect.OLLAMA, method="POST", path=message.path,
                    request_id=request_id, model=message.model, hints=message.hints, size_mode=message.size_mode,
                    fixed_size=message.fixed_size, body=message.body,
                    request_id_is_uuid=message.request_id is None or is_uuid(request_id))
        exchange = _Exchange(call)
        sock.requests[request_id] = exchange
        exchange.task = sock.tasks.spawn(self._answer(sock, exchange), name=f"websocket request {request_id}")

    async def _answer(self, sock: _Socket, exchange: _Exchange) -> None:
        call, answers, record = exchange.call, exchange.answers, exchange.record
        try:
            try:
                await self.pipeline.run(call, partial(self._relay, sock, exchange), record)
            except OllamaProxyError as exc:
                exchange.status = exc.status
                await exchange.last(sock, answers.refused(exc))
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not exchange.cancel_asked or task is None:
                    raise
                # The client's cancel: the pipeline was left by it; the socket is still open to say so.
                task.uncancel()
                exchange.status = 499
                if not exchange.finished:
                    await exchange.last(sock, answers.cancelled(time.perf_counter()))
            except ConnectionError:
                raise
            except Exception as exc:
                log.exception("%s unexpected error while answering on %s", call.request_id, PATH)
                self.metrics.count_failure("internal_error")
                exchange.status = 500
                await exchange.last(sock, answers.error(
                    f"internal error in the proxy ({type(exc).__name__}); request id {call.request_id}", 500))
        except ConnectionError:
            exchange.status = 499  # the client hung up under the request: normal, not a failure to report
        except asyncio.CancelledError:
            exchange.status = 499  # the socket closed: nothing more can be answered
            raise
        finally:
            del sock.requests[call.request_id]
            self._log(exchange)

    async def _relay(self, sock: _Socket, exchange: _Exchange, reply: Reply) -> None:
        """The reply as frames: tokens as they come, then the final frame once the backend's stream
        ended (so its last line has been learned from), or an error frame when it broke."""
        call, answers = exchange.call, exchange.answers
        exchange.status = reply.status
        final: dict[str, Any] | None = None
        async for native in native_objects(reply):
            if final is not None:
                continue
            if isinstance(native, StreamFailure):
                exchange.status = 502
                await exchange.last(sock, answers.error(native.reason, 502))
                return
            error = native.get("error")
            if reply.status >= 400 or error is not None:
                exchange.status = reply.status if reply.status >= 400 else 502
                await exchange.last(sock, answers.error(
                    str(error or f"the backend answered {reply.status}"), exchange.status))
                return
            text = token_of(native, call.operation)
            if text:
                await sock.send(answers.token(text, time.perf_counter()))
            if native.get("done"):
                final = native
        if final is None:
            exchange.status = 502
            await exchange.last(sock, answers.error("the backend's reply ended without its final done object", 502))
            return
        await exchange.last(sock, answers.final(exchange.record, final, _num_ctx(exchange), time.perf_counter()))

    def _log(self, exchange: _Exchange) -> None:
        record, call = exchange.record, exchange.call
        elapsed = time.perf_counter() - record.started
        backend = record.backend_id or "-"
        self.metrics.observe(backend, exchange.status, elapsed)
        log.info("%s WS %s model=%s backend=%s status=%d %.1fms%s", call.request_id, call.path, call.model,
                 backend, exchange.status, elapsed * 1000, f" failed: {record.failure}" if record.failure else "")


def _cap_send_buffer(transport: asyncio.Transport | None) -> None:
    raw = transport.get_extra_info("socket") if transport is not None else None
    if raw is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _KERNEL_SEND_BUFFER)


def _num_ctx(exchange: _Exchange) -> int | None:
    """The context window the request ran with: the size chosen, else what its own options said."""
    if exchange.record.sizing is not None:
        return exchange.record.sizing.num_ctx
    options = (exchange.call.body or {}).get("options") or {}
    size = options.get("num_ctx")
    return size if isinstance(size, int) else None


class _Socket:
    __slots__ = ("connection", "requests", "tasks", "transport", "ws")

    def __init__(self, ws: web.WebSocketResponse, connection: object, transport: asyncio.Transport | None) -> None:
        self.ws = ws
        self.connection = connection
        self.transport = transport
        self.requests: dict[str, _Exchange] = {}
        self.tasks = TaskSet()

    async def send(self, frame: bytes) -> None:
        await self.ws.send_frame(frame, WSMsgType.TEXT)


class _Exchange:
    """One request on a socket: its call, its task and how it ended."""

    __slots__ = ("answers", "call", "cancel_asked", "finished", "record", "status", "task")

    task: asyncio.Task[Any]

    def __init__(self, call: Call) -> None:
        self.call = call
        self.record = CallRecord(started=time.perf_counter())
        self.answers = Answers(call.request_id, self.record.started)
        self.cancel_asked = False
        self.finished = False  # its last frame went out: a cancel now comes too late
        self.status = 0

    async def last(self, sock: _Socket, frame: bytes) -> None:
        self.finished = True
        await sock.send(frame)
