"""The HTTP front of the pipeline: an aiohttp request in, a `Call` to the pipeline, its `Reply` back out
as an HTTP response.

Here and only here are URLs turned into operations (`/api/chat` is CHAT in the Ollama dialect,
`/v1/chat/completions` CHAT in the OpenAI one, `/proxy-context/{auto|size}/` the sizing asked for),
the routing headers read, decisions rendered as `X-*` headers, streams framed as NDJSON or SSE, and
errors given their HTTP status and the route's JSON shape. The body is parsed only when a decision
needs it (a JSON operation), and relayed bytes are written as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy

from ollama_proxy.adapters.http.headers import forwardable_request_headers, forwardable_response_headers
from ollama_proxy.adapters.http.metrics import Metrics
from ollama_proxy.adapters.http.replies import error_response, stream_error_line
from ollama_proxy.config.schema import Config
from ollama_proxy.core.ollama_api import (
    CONTEXT_PREFIX,
    ContextRoute,
    SizeMode,
    is_api_path,
    model_of,
    normalized_path,
    sizes_itself,
    split_context_route,
)
from ollama_proxy.core.openai.sse import DONE_EVENT, encode_event
from ollama_proxy.core.operations import Dialect, Operation
from ollama_proxy.core.routing.headers import ROUTE_HEADERS, decision_headers, parse_route_headers, refusal_headers
from ollama_proxy.core.streams import EndOfStream, StreamFailure
from ollama_proxy.errors import BadRequest, NoBackendAvailable, OllamaProxyError, PayloadTooLarge
from ollama_proxy.service.pipeline import Pipeline
from ollama_proxy.service.reply import Call, CallRecord, Framing, Reply

log = logging.getLogger("ollama_proxy.access")

_NATIVE = {"/api/generate": Operation.GENERATE, "/api/chat": Operation.CHAT, "/api/embed": Operation.EMBED,
           "/api/embeddings": Operation.EMBEDDINGS, "/api/show": Operation.SHOW, "/api/pull": Operation.PULL,
           "/api/push": Operation.PUSH, "/api/create": Operation.CREATE, "/api/copy": Operation.COPY,
           "/api/delete": Operation.DELETE, "/api/tags": Operation.TAGS, "/api/ps": Operation.PS}
_OPENAI = {"/v1/chat/completions": Operation.CHAT, "/v1/completions": Operation.COMPLETION,
           "/v1/embeddings": Operation.EMBED, "/v1/models": Operation.MODELS, "/v1/responses": Operation.RESPONSES}
_ANTHROPIC = {"/v1/messages": Operation.CHAT, "/v1/messages/count_tokens": Operation.COUNT_TOKENS}
_MODELS_PREFIX = "/v1/models/"
# What the proxy sends on to a backend; OPTIONS is answered here, anything else is refused.
_FORWARDED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})
_BODY_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})
_ALLOW = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"
_CONTENT_TYPES = {Framing.SSE: {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
                  Framing.NDJSON: {"Content-Type": "application/x-ndjson"}}


def new_request_id() -> str:
    """A random (version 4) UUID, built by hand: `str(uuid.uuid4())` costs several times as much
    and this runs on every request."""
    # UUID-shaped: llama-cpp-python's server refuses any other X-Request-ID with an empty 400.
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def operation_of(path: str) -> tuple[Operation, Dialect, str | None]:
    """The operation and dialect a (normalised) path names, and the model id of `/v1/models/{id}`."""
    if path.startswith("/v1/") or path == "/v1":
        if path.startswith(_MODELS_PREFIX):
            return Operation.MODELS, Dialect.OPENAI, path[len(_MODELS_PREFIX):]
        anthropic = _ANTHROPIC.get(path)
        if anthropic is not None:
            return anthropic, Dialect.ANTHROPIC, None
        return _OPENAI.get(path, Operation.OTHER), Dialect.OPENAI, None
    return _NATIVE.get(path, Operation.OTHER), Dialect.OLLAMA, None


class HttpFront:
    def __init__(self, config: Config, pipeline: Pipeline, metrics: Metrics) -> None:
        self.metrics = metrics
        self.in_flight = 0  # requests being handled now: what a shutdown drains
        self.follow(config, pipeline)

    def follow(self, config: Config, pipeline: Pipeline) -> None:
        """Serve new requests with these (a configuration reload); requests under way keep theirs."""
        self.pipeline = pipeline
        self._sizes = config.context.sizes
        self._default_route = SizeMode(config.context.default_route.value)
        self._max_body_bytes = config.server.max_body_bytes
        self._body_timeout_s = config.server.header_timeout_s
        # The client's own X-Request-ID is replaced by the one the proxy answers with (the same, when given).
        drop = {"x-request-id"} | ({"authorization", "x-api-key"} if config.server.api_keys else set())
        self._drop = frozenset(drop)
        # Only the JSON log reads a record's fields: text logging does not build them per request.
        self._log_fields = config.server.log_format == "json"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        given_id = request.headers.get("X-Request-ID")
        request_id = given_id or new_request_id()
        exchange = _Exchange(request_id, request.method, ContextRoute(self._default_route, request.path))
        self.in_flight += 1
        try:
            call = await self._call(request, exchange, uuid_shaped=not given_id or _uuid_shaped(given_id))
            if isinstance(call, web.StreamResponse):
                response = call
            else:
                exchange.record = CallRecord(started=exchange.started)
                async with self.pipeline.run(call, exchange.record) as reply:
                    response = await self._respond(request, exchange, reply)
        except OllamaProxyError as exc:
            response = await self._failed(request, exchange, exc)
        except (asyncio.CancelledError, ConnectionResetError) as exc:
            exchange.status = 499
            self._log(exchange, "client went away")
            if isinstance(exc, ConnectionResetError):
                # A write to a client that hung up: a cancellation, not a server error to report.
                raise asyncio.CancelledError from exc
            raise
        except Exception as exc:
            # The one place a bug surfaces: answered in the route's shape, logged once with its
            # traceback and the request id, counted; the proxy goes on serving.
            log.exception("%s unexpected error while handling %s %s", request_id, request.method, exchange.path)
            self.metrics.count_failure("internal_error")
            response = await self._failed(request, exchange, OllamaProxyError(
                f"internal error in the proxy ({type(exc).__name__}); request id {request_id}"))
        finally:
            self.in_flight -= 1
        exchange.status = response.status
        self._log(exchange)
        return response

    async def _call(self, request: web.Request, exchange: _Exchange, *, uuid_shaped: bool
                    ) -> Call | web.StreamResponse:
        try:
            exchange.requested = normalized_path(request.path)
            exchange.route = route = split_context_route(exchange.requested, self._sizes, self._default_route)
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        path = route.path
        if not is_api_path(path):
            raise BadRequest(f"no such endpoint: {path} (the proxy forwards /, /api/... and /v1/...; its own "
                             "views are the status page /ui, /status, /health, /backends, /efficiency, /thermal "
                             "and /metrics)", 404)
        if request.method not in _FORWARDED_METHODS:
            if request.method == "OPTIONS":
                # Preflights are answered by the CORS guard; nothing else about OPTIONS concerns a backend.
                return web.Response(status=204, headers={"X-Request-ID": exchange.request_id, "Allow": _ALLOW})
            raise BadRequest(f"method {request.method} is not allowed (allowed: {_ALLOW})", 405)
        operation, dialect, model_id = operation_of(path)
        body = raw = None
        if request.method in _BODY_METHODS and (operation.json_body or dialect is not Dialect.OLLAMA):
            body, raw = await self._read_json(request, operation, dialect)
        exchange.model = model_of(body) if body is not None else None
        streamed = raw is None and request.body_exists
        size_mode = route.mode
        if not exchange.requested.startswith(CONTEXT_PREFIX) and body is not None and sizes_itself(body):
            # A bare path sizes by default, but never over the client's own choice.
            size_mode = SizeMode.PASSTHROUGH
        return Call(
            operation=operation, dialect=dialect, method=request.method, path=path, request_id=exchange.request_id,
            model=exchange.model, hints=parse_route_headers(_routing_headers(request.headers)),
            size_mode=size_mode, fixed_size=route.size, body=body, raw_body=raw,
            upload=request.content.iter_any() if streamed else None, query=request.query_string or None,
            headers=forwardable_request_headers(request.headers.items(), self._drop),
            request_id_is_uuid=uuid_shaped, model_id=model_id)

    async def _read_json(self, request: web.Request, operation: Operation, dialect: Dialect
                         ) -> tuple[dict[str, Any] | None, bytes | None]:
        limit = self._max_body_bytes
        # A declared length over the limit is refused before a byte of the body is read.
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(limit)
        raw = await _read_body(request, limit, self._body_timeout_s)
        if not raw.strip():
            if request.method != "POST" or operation is Operation.DELETE:
                return None, None
            raise BadRequest("missing request body")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"invalid JSON in request body: {exc}") from exc
        if not isinstance(body, dict):
            raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
        options = body.get("options")
        if options is not None and not isinstance(options, dict) and dialect is Dialect.OLLAMA:
            raise BadRequest(f"options must be a JSON object, got {_json_type(options)}")
        return body, raw

    async def _respond(self, request: web.Request, exchange: _Exchange, reply: Reply) -> web.StreamResponse:
        headers = forwardable_response_headers(reply.headers.items())
        headers.update(self._decision_headers(exchange.request_id, reply.record))
        if reply.stream is None:
            body = reply.body
            if isinstance(body, bytes):
                return web.Response(status=reply.status, body=body, headers=headers)
            return web.Response(status=reply.status, body=orjson.dumps(body), headers=headers,
                                content_type="application/json")
        if not reply.headers:
            headers.update(_CONTENT_TYPES.get(reply.framing, {}))
        response = web.StreamResponse(status=reply.status, headers=headers)
        await response.prepare(request)
        exchange.started_stream = response
        sse = reply.framing is Framing.SSE
        async for piece in reply.stream:
            if type(piece) is bytes:
                await response.write(piece)
            elif isinstance(piece, dict):
                await response.write(encode_event(piece) if sse else orjson.dumps(piece) + b"\n")
            elif isinstance(piece, EndOfStream):
                await response.write(DONE_EVENT)
            elif isinstance(piece, StreamFailure):
                await response.write(stream_error_line(piece.reason, sse, open_line=piece.open_line))
        await response.write_eof()
        return response

    @staticmethod
    def _decision_headers(request_id: str, record: CallRecord) -> dict[str, str]:
        headers = {"X-Request-ID": request_id}
        if record.routing is not None:
            headers.update(decision_headers(record.routing))
        if record.sizing is not None:
            headers.update(record.sizing.headers())
        if record.truncated is not None:
            headers["X-Proxy-Context-Truncated"] = record.truncated
        return headers

    async def _failed(self, request: web.Request, exchange: _Exchange, exc: OllamaProxyError) -> web.StreamResponse:
        """The error answer: a JSON error in the route's shape, or, once a stream has started, its last line."""
        exchange.failure = str(exc)
        started = exchange.started_stream
        if started is not None:
            with contextlib.suppress(ConnectionError):
                await started.write(stream_error_line(str(exc), "event-stream" in started.content_type,
                                                      path=exchange.path))
                await started.write_eof()
            return started
        extra: dict[str, Any] = {}
        if isinstance(exc, NoBackendAvailable) and exc.reasons:
            extra["excluded"] = exc.reasons
        headers = self._decision_headers(exchange.request_id, exchange.record) if exchange.record else {
            "X-Request-ID": exchange.request_id}
        if isinstance(exc, NoBackendAvailable) and "X-Routing-Reason" not in headers:
            # Routing refused before deciding anything: the refusal explains itself in the same headers.
            headers.update(refusal_headers(exc))
        return error_response(exchange.path, str(exc), getattr(exc, "status", 500), headers=headers,
                              retry_after_s=getattr(exc, "retry_after_s", None), **extra)

    def _log(self, exchange: _Exchange, note: str | None = None) -> None:
        """One log line and the metrics for a finished request."""
        record = exchange.record
        elapsed = time.perf_counter() - exchange.started
        backend = record.backend_id if record and record.backend_id else "-"
        self.metrics.observe(backend, exchange.status, elapsed)
        if not log.isEnabledFor(logging.INFO):
            return
        sizing = record.sizing if record else None
        queued_ms = record.queued_ms if record else 0.0
        failure = exchange.failure or (record.failure if record else None)
        sized = f" num_ctx={sizing.num_ctx} ({sizing.reason.value})" if sizing else ""
        queued = f" queued={queued_ms:.1f}ms" if queued_ms >= 0.1 else ""
        fields = {"request_id": exchange.request_id, "method": exchange.method, "path": exchange.requested,
                  "model": exchange.model, "backend": backend, "status": exchange.status,
                  "duration_ms": round(elapsed * 1000, 1), "queued_ms": round(queued_ms, 1),
                  "num_ctx": sizing.num_ctx if sizing else None,
                  "sizing_reason": sizing.reason.value if sizing else None,
                  "failure": failure or note} if self._log_fields else None
        log.info("%s %s %s model=%s backend=%s%s status=%d %.1fms%s%s", exchange.request_id, exchange.method,
                 exchange.requested, exchange.model or "-", backend, sized, exchange.status, elapsed * 1000, queued,
                 f" failed: {failure}" if failure else (f" ({note})" if note else ""), extra={"fields": fields})


class _Exchange:
    """What the front keeps about one request for its answer and its log line."""

    __slots__ = ("failure", "method", "model", "record", "request_id", "requested", "route", "started",
                 "started_stream", "status")

    def __init__(self, request_id: str, method: str, route: ContextRoute) -> None:
        self.request_id = request_id
        self.method = method
        self.route = route
        self.requested = route.path  # the path as the client wrote it, /proxy-context/... included
        self.started = time.perf_counter()
        self.model: str | None = None
        self.record: CallRecord | None = None
        self.started_stream: web.StreamResponse | None = None
        self.failure: str | None = None
        self.status = 0

    @property
    def path(self) -> str:
        return self.route.path


def _routing_headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """Only the headers routing reads: handing over the whole header set would have every header
    copied and lowercased on each request. The last of repeated headers wins, as it would there."""
    return {name: headers.getall(name)[-1] for name in ROUTE_HEADERS if name in headers}


def _uuid_shaped(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


async def _read_body(request: web.Request, limit: int, idle_timeout_s: float) -> bytes:
    """The request body, refused past `limit` bytes or after `idle_timeout_s` of silence from the client."""
    content = request.content
    parts: list[bytes] = []
    size = 0
    while True:
        if content.is_eof():
            # All of it is here (a small body usually arrives with the headers): nothing to wait for or time.
            chunk = content.read_nowait()
        else:
            try:
                async with asyncio.timeout(idle_timeout_s):
                    chunk = await content.readany()
            except TimeoutError:
                raise BadRequest(f"the request body stopped arriving for {idle_timeout_s:g} s "
                                 "(server.header_timeout_s)", 408) from None
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        parts.append(chunk)


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__)

