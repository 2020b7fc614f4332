"""The fast front's answer to one request: the guards, the `Call` and the rendering of its `Reply`
that the aiohttp front has (`adapters.http.calls`, `guards`, `replies`), written as bytes.

The access log line and the metrics are noted once the answer has been written (its bytes are on the
socket by then); the log handler writes its lines at the end of the loop's turn (`logs.LineHandler`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import TYPE_CHECKING

import orjson

from ollama_proxy.adapters.fast import framing
from ollama_proxy.adapters.http.calls import (
    ALLOW,
    STREAM_CONTENT_TYPES,
    Exchange,
    answer_header_pairs,
    new_request_id,
    operation_of,
    refusal,
)
from ollama_proxy.adapters.http.guards import KEY_REFUSAL, PREFLIGHT_HEADERS
from ollama_proxy.adapters.http.replies import error_body, stream_error_line
from ollama_proxy.core.ollama_api import ContextRoute
from ollama_proxy.core.openai.sse import DONE_EVENT, encode_event
from ollama_proxy.core.streams import EndOfStream, StreamFailure
from ollama_proxy.errors import OllamaProxyError
from ollama_proxy.service.reply import CallRecord, Framing, Reply

if TYPE_CHECKING:
    from ollama_proxy.adapters.fast.connection import Connection
    from ollama_proxy.adapters.fast.request import Request
    from ollama_proxy.adapters.fast.server import FastServer

log = logging.getLogger("ollama_proxy.access")

_PREFLIGHT = framing.header_lines(PREFLIGHT_HEADERS.items())
_STREAM_TYPES = {framing_: framing.header_lines(lines) for framing_, lines in STREAM_CONTENT_TYPES.items()}
_OCTET_STREAM = b"Content-Type: application/octet-stream\r\n"  # what aiohttp labels an untyped body


class _Exchange(Exchange):
    __slots__ = ("cors", "stream_sse")

    def __init__(self, request_id: str, method: str, route: ContextRoute) -> None:
        super().__init__(request_id, method, route)
        self.cors = b""  # the CORS lines every answer to an allowed origin carries
        self.stream_sse: bool | None = None  # once a stream started: whether it is an event stream


async def answer(server: FastServer, conn: Connection, request: Request) -> None:
    front = server.front
    rules = front.rules
    path, query = framing.split_target(bytes(request.target))
    exchange = _Exchange(request.request_id or new_request_id(), request.method, rules.initial_route(path))
    note = None
    logged = True
    front.in_flight += 1
    try:
        logged = await _serve(server, conn, request, exchange, path, query)
    except OllamaProxyError as exc:
        _failed(server, conn, request, exchange, exc)
    except (asyncio.CancelledError, ConnectionResetError):
        exchange.status, note = 499, "client went away"
    except Exception as exc:
        # The one place a bug surfaces: answered in the route's shape, logged once with its traceback
        # and the request id, counted; the proxy goes on serving.
        log.exception("%s unexpected error while handling %s %s", exchange.request_id, request.method,
                      exchange.path)
        front.metrics.count_failure("internal_error")
        _failed(server, conn, request, exchange, OllamaProxyError(
            f"internal error in the proxy ({type(exc).__name__}); request id {exchange.request_id}"))
    finally:
        front.in_flight -= 1
    try:
        if logged:
            front.access.finished(exchange, time.perf_counter() - exchange.started, note)
    finally:
        conn.answer_done(request)


async def _serve(server: FastServer, conn: Connection, request: Request, exchange: _Exchange, path: str,
                 query: str | None) -> bool:
    """Answers the request; False when a guard refused it (not logged, as the aiohttp front's guards)."""
    if request.refusal is not None:
        raise request.refusal
    cors, origin = server.cors, request.origin
    if origin is not None and cors is not None:
        if not cors.allowed(origin):
            _send_json(server, conn, request, exchange, 403, cors.refusal(origin))
            return False
        exchange.cors = framing.header_lines(cors.response_headers(origin))
        if request.method == "OPTIONS" and request.preflight:
            _send(server, conn, request, exchange, 204, _PREFLIGHT + exchange.cors, b"")
            return False
    keys = server.keys
    if keys is not None and not keys.accepts(request.x_api_key, request.authorization):
        _send_json(server, conn, request, exchange, 401, KEY_REFUSAL)
        return False
    rules = server.front.rules
    method = request.method
    upstream_path = rules.route(exchange, path)
    if not rules.forwarded(method):
        lines = framing.header_lines((("X-Request-ID", exchange.request_id), ("Allow", ALLOW)))
        _send(server, conn, request, exchange, 204, lines + exchange.cors, b"")
        return True
    operation, dialect, model_id = operation_of(upstream_path)
    body = raw = upload = None
    if rules.parses_body(method, operation, dialect):
        rules.check_length(request.content_length)
        body, raw = rules.parse_json(await request.body(rules.max_body_bytes, rules.body_timeout_s), method,
                                     operation, dialect)
    elif request.has_body:
        upload = conn.upload(request)
    call = rules.call(exchange, method, operation, dialect, model_id, body=body, raw=raw, upload=upload,
                      query=query, headers=request.headers, routing=request.routing, given_id=request.request_id)
    exchange.record = CallRecord(started=exchange.started)
    await server.front.pipeline.run(call, partial(_respond, server, conn, request, exchange), exchange.record)
    return True


async def _respond(server: FastServer, conn: Connection, request: Request, exchange: _Exchange,
                   reply: Reply) -> None:
    lines = framing.header_lines(answer_header_pairs(reply.headers, exchange.request_id, reply.record)) + exchange.cors
    # The proxy's own headers never type the body: the backend's do, if any (its headers look up case-insensitively).
    content_type = reply.headers.get("Content-Type") if reply.headers else None
    typed = content_type is not None
    if reply.stream is None:
        body = reply.body
        if isinstance(body, bytes):
            lines += b"" if typed else _OCTET_STREAM
        else:
            body, lines = orjson.dumps(body), lines + framing.JSON_TYPE
        _send(server, conn, request, exchange, reply.status, lines, body)
        return
    if not typed:
        lines += _STREAM_TYPES.get(reply.framing, _OCTET_STREAM)
    exchange.stream_sse = "event-stream" in (content_type or "") or (not typed and reply.framing is Framing.SSE)
    exchange.status = reply.status
    chunked = not request.http10
    if not chunked:
        request.keep_alive = False  # an HTTP/1.0 client reads a body of unknown length to the close
    conn.write(framing.head(reply.status, lines, length=None, chunked=chunked, keep_alive=conn.keep_alive(request),
                            date=server.date()))
    if not framing.has_body(reply.status, request.method):
        return
    sse = reply.framing is Framing.SSE
    if reply.pipe is not None:
        # Relayed bytes: written from the upstream connection's callback, no wake-up of this task per piece.
        failure = await reply.pipe(_Sink(conn, chunked))
        if failure is not None:
            line = stream_error_line(failure.reason, sse, open_line=failure.open_line)
            conn.write(framing.chunk(line) if chunked else line)
    else:
        async for piece in reply.stream:
            if type(piece) is bytes:
                data = piece
            elif isinstance(piece, dict):
                data = encode_event(piece) if sse else orjson.dumps(piece) + b"\n"
            elif isinstance(piece, EndOfStream):
                data = DONE_EVENT
            elif isinstance(piece, StreamFailure):
                data = stream_error_line(piece.reason, sse, open_line=piece.open_line)
            else:
                continue
            if data:
                conn.write(framing.chunk(data) if chunked else data)
                if conn.blocked:
                    await conn.drain()
    if chunked:
        conn.write(framing.LAST_CHUNK)


class _Sink:
    """The client's connection as a piped stream's sink: each piece a chunk (HTTP/1.1), or as it is."""

    __slots__ = ("_chunked", "_conn")

    def __init__(self, conn: Connection, chunked: bool) -> None:
        self._conn, self._chunked = conn, chunked

    def write(self, data: bytes) -> bool:
        # Called for every piece of every stream: `framing.chunk` and the connection's write, inlined.
        conn = self._conn
        transport = conn.transport
        if transport is not None:
            transport.write(framing.CHUNK_FORMAT % (len(data), data) if self._chunked else data)
        return not conn.blocked

    async def drain(self) -> None:
        await self._conn.drain()


def _failed(server: FastServer, conn: Connection, request: Request, exchange: _Exchange,
            exc: OllamaProxyError) -> None:
    """The error answer: a JSON error in the route's shape, or, once a stream has started, its last line."""
    headers, extra = refusal(exchange, exc)
    if exchange.stream_sse is not None:
        line = stream_error_line(str(exc), exchange.stream_sse, path=exchange.path)
        conn.write(framing.chunk(line) + framing.LAST_CHUNK if not request.http10 else line)
        return
    status = getattr(exc, "status", 500)
    lines = framing.header_lines(headers.items()) + exchange.cors + framing.JSON_TYPE
    _send(server, conn, request, exchange, status, lines, orjson.dumps(error_body(exchange.path, str(exc), status,
                                                                                  **extra)))


def _send_json(server: FastServer, conn: Connection, request: Request, exchange: _Exchange, status: int,
               message: str) -> None:
    """A guard's refusal (CORS, authentication), before any decision: the error and nothing else."""
    body = orjson.dumps(error_body(exchange.path, message, status))
    _send(server, conn, request, exchange, status, exchange.cors + framing.JSON_TYPE, body)


def _send(server: FastServer, conn: Connection, request: Request, exchange: _Exchange, status: int, lines: bytes,
          body: bytes) -> None:
    exchange.status = status
    data = framing.head(status, lines, length=len(body), keep_alive=conn.keep_alive(request), date=server.date())
    if framing.has_body(status, request.method):
        conn.write(data + body if len(body) < 65536 else data)
        if len(body) >= 65536:
            conn.write(body)
    else:
        conn.write(data)
