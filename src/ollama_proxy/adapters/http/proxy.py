"""The forwarding pipeline: read what a decision needs, size the context, pick a backend, send,
relay back, learn from the answer.

Hot path rules: the body is parsed only on JSON endpoints (model name, stream flag, context
sizing), re-encoded only when something in it changed, and response bytes are relayed as they
arrive without being parsed, except the final line whose metrics feed the learning. Translation
between the OpenAI and native protocols happens only when client and backend speak differently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from ollama_proxy.adapters.http.bridges import (
    WHOLE_REPLY_LIMIT,
    RelayHooks,
    native_from_openai,
    openai_from_native,
)
from ollama_proxy.adapters.http.listings import V1_MODELS, Listings
from ollama_proxy.adapters.http.metrics import Metrics
from ollama_proxy.adapters.http.replies import error_response, is_openai_path, json_response, stream_error_line
from ollama_proxy.adapters.upstream.aiohttp_client import (
    ERROR_BODY_LIMIT,
    UpstreamReply,
    forwardable_request_headers,
    forwardable_response_headers,
)
from ollama_proxy.config.schema import Config
from ollama_proxy.core.ollama_api import (
    AGGREGATE_PATHS,
    INFERENCE_PATHS,
    JSON_PATHS,
    MANAGEMENT_PATHS,
    ContextRoute,
    SizeMode,
    is_api_path,
    model_of,
    normalized_path,
    split_context_route,
)
from ollama_proxy.core.openai.requests import TRANSLATORS, NativeRequest
from ollama_proxy.core.openai.reverse_requests import REVERSE_TRANSLATORS, is_load_only
from ollama_proxy.core.openai.reverse_responses import EMPTY_STREAM, load_only_reply
from ollama_proxy.core.routing.breaker import Outcome, classify_status
from ollama_proxy.core.routing.headers import ROUTE_HEADERS, decision_headers, parse_route_headers
from ollama_proxy.core.routing.select import fail_over
from ollama_proxy.core.streams import LastLine
from ollama_proxy.errors import (
    BadRequest,
    NoBackendAvailable,
    OllamaProxyError,
    PayloadTooLarge,
    UpstreamError,
    UpstreamTimeout,
)
from ollama_proxy.service.context import ContextService, Sizing
from ollama_proxy.service.pool import Backend, BackendPool
from ollama_proxy.service.router import Router
from ollama_proxy.service.tasks import spawn

log = logging.getLogger("ollama_proxy.access")

# Responses with a known length up to this size are read whole and sent in one write.
_BUFFER_LIMIT = 1 << 20
_DONE = b'"done":true'
# Generate and chat streams end with a `done: true` line; a stream without one was cut short.
_DONE_TERMINATED = frozenset({"/api/generate", "/api/chat"})
# OpenAI streams end with `data: [DONE]`; one without it was cut short.
_SSE_DONE_TERMINATED = frozenset({"/v1/chat/completions", "/v1/completions"})
_LOAD_NOTICEABLE_NS = 50_000_000
# What the proxy sends on to a backend; OPTIONS is answered here, anything else is refused.
_FORWARDED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})
_ALLOW = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"


def new_request_id() -> str:
    """A random (version 4) UUID, built by hand: `str(uuid.uuid4())` costs several times as much
    and this runs on every request."""
    # UUID-shaped: llama-cpp-python's server refuses any other X-Request-ID with an empty 400.
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _uuid_shaped(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


@dataclass(slots=True)
class Exchange:
    """Everything one request accumulates on its way through the proxy."""

    request_id: str
    request_id_is_uuid: bool  # OpenAI-type servers get the id only if it is (see new_request_id)
    method: str
    route: ContextRoute
    started: float
    body: dict[str, Any] | None = None
    raw_body: bytes | None = None
    model: str | None = None
    native: NativeRequest | None = None  # the OpenAI request as a native call, for Ollama backends
    sizing: Sizing | None = None
    backend: Backend | None = None
    status: int = 0
    headers_out: dict[str, str] = field(default_factory=dict)
    first_byte: float | None = None
    queued_ms: float = 0.0
    failure: str | None = None
    hooks: RelayHooks = field(init=False)

    @property
    def path(self) -> str:
        return self.route.path


class ProxyHandler:
    def __init__(self, config: Config, pool: BackendPool, router: Router, context: ContextService,
                 metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.pool = pool
        self.router = router
        self.context = context
        self.listings = Listings(pool)
        self.in_flight = 0  # requests being handled now: what a shutdown drains
        self._default_route = SizeMode(config.context.default_route.value)
        self._drop_auth = frozenset({"authorization", "x-api-key"}) if config.server.api_keys else frozenset()
        self._max_failover = config.router.max_failover
        self._management_default = config.router.default_backend
        self._body_timeout_s = config.server.header_timeout_s
        # A lone OpenAI-type backend has no /api/tags of its own: the aggregate translates it.
        self._aggregating = sum(b.enabled for b in config.backends) > 1 or any(
            b.enabled and b.type == "openai" for b in config.backends)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        given_id = request.headers.get("X-Request-ID")
        exchange = Exchange(
            request_id=given_id or new_request_id(),
            request_id_is_uuid=not given_id or _uuid_shaped(given_id),
            method=request.method,
            route=ContextRoute(self._default_route, request.path),
            started=time.perf_counter(),
        )
        exchange.headers_out["X-Request-ID"] = exchange.request_id
        exchange.hooks = self._hooks(exchange)
        self.in_flight += 1
        try:
            response = await self._handle(request, exchange)
        except OllamaProxyError as exc:
            response = await self._failed(request, exchange, exc)
        except (asyncio.CancelledError, ConnectionResetError) as exc:
            exchange.status = 499
            self._record(exchange, "client went away")
            if isinstance(exc, ConnectionResetError):
                # A write to a client that hung up: a cancellation, not a server error to report.
                raise asyncio.CancelledError from exc
            raise
        except Exception as exc:
            # The one place a bug surfaces: answered in the route's shape, logged once with its
            # traceback and the request id, counted; the proxy goes on serving.
            log.exception("%s unexpected error while handling %s %s", exchange.request_id, request.method,
                          exchange.path)
            self.metrics.count_failure("internal_error")
            response = await self._failed(request, exchange, OllamaProxyError(
                f"internal error in the proxy ({type(exc).__name__}); request id {exchange.request_id}"))
        finally:
            self.in_flight -= 1
        exchange.status = response.status
        self._record(exchange)
        return response

    async def _handle(self, request: web.Request, exchange: Exchange) -> web.StreamResponse:
        try:
            exchange.route = split_context_route(normalized_path(request.path), self.config.context.sizes,
                                                 self._default_route)
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        path = exchange.path
        if not is_api_path(path):
            raise BadRequest(f"no such endpoint: {path} (the proxy forwards /, /api/... and /v1/...; its own "
                             "views are /health, /backends, /efficiency, /thermal and /metrics)", 404)
        if request.method not in _FORWARDED_METHODS:
            if request.method == "OPTIONS":
                # Preflights are answered by the CORS guard; nothing else about OPTIONS concerns a backend.
                return web.Response(status=204, headers={**exchange.headers_out, "Allow": _ALLOW})
            raise BadRequest(f"method {request.method} is not allowed (allowed: {_ALLOW})", 405)
        if request.method in ("POST", "PUT", "DELETE", "PATCH") and (path in JSON_PATHS or is_openai_path(path)):
            await self._read_json(request, exchange)
        if request.method == "GET" and "X-Target-Backend" not in request.headers:
            if path == V1_MODELS or path.startswith(V1_MODELS + "/"):
                return await self.listings.openai_models(path, exchange.headers_out)
            if path in AGGREGATE_PATHS and self._aggregating:
                return await self.listings.merged(path, exchange.headers_out)
        body = exchange.body
        if body is not None and path in TRANSLATORS:
            exchange.native = TRANSLATORS[path](body)
        if exchange.route.mode is not SizeMode.PASSTHROUGH and exchange.model and body is not None and (
                exchange.native is not None or path in INFERENCE_PATHS):
            counted = exchange.native.body if exchange.native else body
            exchange.sizing = await self.context.count(exchange.model, counted,
                                                       self.pool.holder_of(exchange.model))
        return await self._forward(request, exchange)

    async def _read_json(self, request: web.Request, exchange: Exchange) -> None:
        limit = self.config.server.max_body_bytes
        # A declared length over the limit is refused before a byte of the body is read.
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(limit)
        raw = await _read_body(request, limit, self._body_timeout_s)
        if not raw.strip():
            if request.method != "POST" or exchange.path == "/api/delete":
                return
            raise BadRequest("missing request body")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"invalid JSON in request body: {exc}") from exc
        if not isinstance(body, dict):
            raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
        options = body.get("options")
        if options is not None and not isinstance(options, dict) and not is_openai_path(exchange.path):
            raise BadRequest(f"options must be a JSON object, got {_json_type(options)}")
        exchange.body, exchange.raw_body = body, raw
        exchange.model = model_of(body)

    async def _forward(self, request: web.Request, exchange: Exchange) -> web.StreamResponse:
        sizing = exchange.sizing
        required = self.context.required(sizing, exchange.path, exchange.body or {}) if sizing else None
        route_request = parse_route_headers(_routing_headers(request.headers), model=_routing_model(exchange),
                                            context_tokens=required)
        if route_request.target is None and exchange.path in MANAGEMENT_PATHS and self._management_default:
            route_request = replace(route_request, target=self._management_default)
        decision = self.router.decide(route_request)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s routed to %s (%s); alternatives %s; excluded %s", exchange.request_id,
                      decision.backend_id, decision.reason, ",".join(decision.alternatives) or "-",
                      dict(decision.excluded) or "-")

        headers = forwardable_request_headers(request.headers, self._drop_auth)
        # One id in the client's, the proxy's and the backend's logs, unless an OpenAI-type server would
        # refuse it (see new_request_id).
        headers["X-Request-ID"] = exchange.request_id
        # A streamed request body (blob upload) can be sent once only: no failover for it.
        streamed_body = exchange.raw_body is None and request.body_exists
        attempts = 1 if streamed_body else 1 + self._max_failover
        last_error: OllamaProxyError | None = None
        for attempt in range(attempts):
            backend = self.pool.backends[decision.backend_id]
            is_last = attempt == attempts - 1 or not decision.alternatives
            exchange.backend = backend
            exchange.headers_out.update(decision_headers(decision))
            try:
                async with backend.gate.admit(route_request.priority) as exchange.queued_ms:
                    send = await self._prepare(request, exchange, backend, streamed_body)
                    if isinstance(send, web.StreamResponse):
                        return send
                    path, data, relay = send
                    backend.breaker.on_dispatch(time.monotonic())
                    async with backend.upstream.open(request.method, path, query=request.query_string or None,
                                                     headers=_headers_for(backend, exchange, headers),
                                                     data=data) as upstream:
                        outcome = Outcome.SUCCESS
                        if upstream.status >= 500:
                            error_text = (await upstream.read_error_body()).decode(errors="replace")
                            outcome = classify_status(upstream.status, error_text)
                        self.router.record(backend, outcome)
                        # A request the backend refused as invalid would fail the same way everywhere.
                        if outcome is Outcome.SUCCESS or outcome is Outcome.REQUEST_FAULT or is_last:
                            exchange.first_byte = time.perf_counter()
                            response = await relay(request, exchange, upstream)
                            if exchange.path in MANAGEMENT_PATHS and response.status < 400:
                                # The backend's model list changed: learn it now, not at the next poll.
                                spawn(backend.refresh_models(), name=f"models-{backend.id}")
                            return response
                        why = f"HTTP {upstream.status}"
                        log.warning("%s backend %s answered %d (%s); failing over", exchange.request_id,
                                    backend.id, upstream.status, error_text[:200])
            except UpstreamError as exc:
                if exchange.hooks.started is not None:
                    # The client has its first byte: end that stream, never send the request again.
                    return await self._end_stream(exchange, str(exc), exc)
                last_error = exc
                self._backend_failed(backend, exc)
                why = "timed out" if isinstance(exc, UpstreamTimeout) else "unreachable"
                log.warning("%s %s", exchange.request_id, exc)
            except NoBackendAvailable as exc:
                # Queue full here: another backend may still have room.
                if exc.status != 429 or is_last:
                    raise
                last_error, why = exc, "queue full"
            except (asyncio.CancelledError, ConnectionResetError):
                self.router.record(backend, Outcome.CLIENT_GONE)
                raise
            if is_last:
                break
            successor = self.pool.backends[decision.alternatives[0]]
            decision = fail_over(decision, backend.id, why, power_w=successor.config.characteristics.power_watts)
        raise last_error or NoBackendAvailable("no backend could take the request")

    def _backend_failed(self, backend: Backend, exc: UpstreamError) -> None:
        self.router.record(backend, Outcome.TIMEOUT if isinstance(exc, UpstreamTimeout) else Outcome.CONNECT_ERROR)
        backend.reachable, backend.last_error = False, str(exc)

    async def _prepare(self, request: web.Request, exchange: Exchange, backend: Backend, streamed_body: bool
                       ) -> tuple[str, Any, Callable[..., Any]] | web.StreamResponse:
        """What to send to this backend (path, body) and how to relay its answer back."""
        path, body = exchange.path, exchange.body
        if not backend.is_ollama and path in REVERSE_TRANSLATORS and body is not None:
            return self._prepare_for_openai_backend(exchange, backend)
        if not backend.is_ollama and not is_openai_path(path):
            raise BadRequest(f"backend {backend.id!r} is an OpenAI-type server: it has no {path}", 501)
        relay: Callable[..., Any] = self._relay
        if backend.is_ollama and exchange.native is not None:
            native = exchange.native
            path, body = native.path, dict(native.body)

            async def relay(request: web.Request, exchange: Exchange, upstream: UpstreamReply
                            ) -> web.StreamResponse:
                return await openai_from_native(request, upstream, native.context, exchange.headers_out,
                                                exchange.hooks, backend.id)
        if exchange.sizing is not None and backend.is_ollama and body is not None:
            body = dict(body)
            decision = await self.context.size(exchange.sizing, backend, path, body, exchange.route.size)
            exchange.headers_out.update(decision.headers())
        if streamed_body:
            return path, request.content.iter_any(), relay
        changed = body is not exchange.body
        return path, orjson.dumps(body) if changed else exchange.raw_body, relay

    def _prepare_for_openai_backend(self, exchange: Exchange, backend: Backend
                                    ) -> tuple[str, Any, Callable[..., Any]] | web.StreamResponse:
        call = REVERSE_TRANSLATORS[exchange.path](exchange.body)
        if is_load_only(call.context.kind, exchange.body or {}):
            return json_response(load_only_reply(call.context, time.time()), headers=exchange.headers_out)

        async def relay(request: web.Request, exchange: Exchange, upstream: UpstreamReply
                        ) -> web.StreamResponse:
            return await native_from_openai(request, upstream, call.context, exchange.headers_out,
                                            exchange.hooks, backend.id)

        return call.path, orjson.dumps(call.body), relay

    async def _relay(self, request: web.Request, exchange: Exchange, upstream: UpstreamReply) -> web.StreamResponse:
        """Bytes through, untouched; only the last line is looked at, once the stream has ended."""
        headers = forwardable_response_headers(upstream.headers)
        headers.update(exchange.headers_out)
        if upstream.status >= 400:
            body = await upstream.read_error_body()
            if len(body) >= ERROR_BODY_LIMIT:
                body = orjson.dumps({"error": f"backend answered {upstream.status} with an error longer than "
                                              f"{ERROR_BODY_LIMIT} bytes: {body[:300].decode(errors='replace')}"})
            return web.Response(status=upstream.status, body=body, headers=headers)
        length = upstream.content_length
        # A whole JSON reply (stream: false) is read before a byte is sent, so a backend that breaks
        # off mid-body fails over or gets a JSON error, never a 200 with half an object.
        if ((length is not None and length <= _BUFFER_LIMIT and not upstream.is_chunked)
                or upstream.headers.get("Content-Type", "").startswith("application/json")):
            body = await upstream.read(WHOLE_REPLY_LIMIT)
            if upstream.status == 200 and exchange.path in INFERENCE_PATHS:
                final = _json_object(body)
                if final is None:
                    # Nothing has reached the client: a garbled answer fails over like a broken one.
                    raise UpstreamError(exchange.backend.id if exchange.backend else "?",
                                        f"sent a reply that is not a JSON object: {body[:80]!r}")
                headers.update(exchange.hooks.on_final(final))
            return web.Response(status=upstream.status, body=body, headers=headers)

        response = await exchange.hooks.start(request, web.StreamResponse(status=upstream.status, headers=headers))
        tail = LastLine()
        error: UpstreamError | None = None
        while True:
            try:
                chunk = await upstream.readany()
            except UpstreamError as exc:
                error = exc
                break
            if not chunk:
                break
            tail.feed(chunk)
            await response.write(chunk)
        if error is not None:
            return await self._end_stream(exchange, str(error), error, tail, upstream.is_sse)
        if upstream.status == 200:
            failure, backend_fault = self._judge_ending(exchange, upstream, tail)
            if failure is not None:
                return await self._end_stream(exchange, failure, None, tail, upstream.is_sse,
                                              backend_fault=backend_fault)
        await response.write_eof()
        return response

    async def _end_stream(self, exchange: Exchange, reason: str, error: UpstreamError | None,
                          tail: LastLine | None = None, sse: bool = False, *,
                          backend_fault: bool = True) -> web.StreamResponse:
        """End a stream the client already has the start of with an error object, on a line of its own."""
        response = exchange.hooks.started
        assert response is not None, "only a started stream can be ended"
        exchange.hooks.on_failure(reason, error if backend_fault else None)
        open_line = tail is not None and not tail.ends_line
        with contextlib.suppress(ConnectionError):
            await response.write(stream_error_line(reason, sse, open_line=open_line))
            await response.write_eof()
        return response

    def _judge_ending(self, exchange: Exchange, upstream: UpstreamReply, tail: LastLine) -> tuple[str | None, bool]:
        """Did a stream that ended cleanly really finish? Returns (failure, whether the backend is to blame)."""
        last = tail.line()
        backend_name = exchange.backend.id if exchange.backend else "?"
        if exchange.path in _DONE_TERMINATED and tail.chunks_seen:
            final = _json_object(last) if _DONE in last.replace(b" ", b"") else None
            exchange.hooks.on_final(final)
            if final is None and b'"error"' not in last and not tail.overflowed:
                return f"backend {backend_name!r} ended the stream without a final done line", True
        elif (exchange.path in _SSE_DONE_TERMINATED and upstream.is_sse
              and last.strip() != b"data: [DONE]" and b'"error"' not in last):
            # llama.cpp answers an over-long streamed prompt with an empty 200 stream, then resets
            # the connection: say so, and keep that connection out of the pool. An empty stream is
            # the request's fault (too long), not the backend's.
            upstream.forget_connection()
            if not tail.chunks_seen:
                return EMPTY_STREAM, False
            return f"backend {backend_name!r} ended the stream without data: [DONE]", True
        return None, False

    def _hooks(self, exchange: Exchange) -> RelayHooks:
        return RelayHooks(on_final=self._final_hook(exchange), on_failure=self._failure_hook(exchange))

    def _failure_hook(self, exchange: Exchange) -> Callable[[str, UpstreamError | None], None]:
        """A stream that broke after its start reached the client: logged as a failure, counted, and
        held against the backend when the backend broke it."""

        def on_failure(reason: str, error: UpstreamError | None) -> None:
            exchange.failure = reason
            self.metrics.count_failure("stream_broken")
            if error is not None and exchange.backend is not None:
                self.router.record(exchange.backend,
                                   Outcome.TIMEOUT if isinstance(error, UpstreamTimeout) else Outcome.CONNECT_ERROR)
            log.warning("%s stream broken: %s", exchange.request_id, reason)

        return on_failure

    def _final_hook(self, exchange: Exchange) -> Callable[[dict[str, Any] | None], dict[str, str]]:
        """Learn from a finished inference: latency, calibration, truncation, residency."""

        def on_final(final: dict[str, Any] | None) -> dict[str, str]:
            backend = exchange.backend
            if backend is None:
                return {}
            extra: dict[str, str] = {}
            now = time.perf_counter()
            if exchange.model and final is not None:
                ttft_ms = ((exchange.first_byte or now) - exchange.started) * 1000
                self.router.observe_latency(backend, exchange.model, ttft_ms=ttft_ms,
                                            total_ms=(now - exchange.started) * 1000, final=final)
                if exchange.sizing is not None and backend.is_ollama:
                    truncation = self.context.observe(exchange.sizing, final, backend)
                    if truncation:
                        extra["X-Proxy-Context-Truncated"] = (
                            f"prompt_eval_count={final.get('prompt_eval_count')} "
                            f"counted={exchange.sizing.count.tokens}")
            if final is not None and exchange.model and (
                    backend.loaded_context(exchange.model) is None or _loaded_a_model(final)):
                backend.refresh_loaded_soon()
            return extra

        return on_final

    async def _failed(self, request: web.Request, exchange: Exchange, exc: OllamaProxyError) -> web.StreamResponse:
        """The error answer: a JSON error in the route's shape, or, once a stream has started, its last line."""
        if exchange.hooks.started is not None:
            return await self._end_stream(exchange, str(exc), None, backend_fault=False)
        status = getattr(exc, "status", 500)
        extra: dict[str, Any] = {}
        if isinstance(exc, NoBackendAvailable) and exc.reasons:
            extra["excluded"] = exc.reasons
        exchange.failure = str(exc)
        return error_response(exchange.path, str(exc), status, headers=exchange.headers_out,
                              retry_after_s=getattr(exc, "retry_after_s", None), **extra)

    def _record(self, exchange: Exchange, note: str | None = None) -> None:
        """One log line and the metrics for a finished request."""
        elapsed = time.perf_counter() - exchange.started
        backend = exchange.backend.id if exchange.backend else "-"
        self.metrics.observe(backend, exchange.status, elapsed)
        queued = f" queued={exchange.queued_ms:.1f}ms" if exchange.queued_ms >= 0.1 else ""
        log.info("%s %s %s model=%s backend=%s status=%d %.1fms%s%s", exchange.request_id, exchange.method,
                 exchange.route.path, exchange.model or "-", backend, exchange.status, elapsed * 1000, queued,
                 f" failed: {exchange.failure}" if exchange.failure else (f" ({note})" if note else ""))


async def _read_body(request: web.Request, limit: int, idle_timeout_s: float) -> bytes:
    """The request body, refused past `limit` bytes or after `idle_timeout_s` of silence from the client."""
    parts: list[bytes] = []
    size = 0
    content = request.content
    while True:
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


def _routing_headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """Only the headers routing reads: handing over the whole header set would have every header
    copied and lowercased on each request. The last of repeated headers wins, as it would there."""
    return {name: headers.getall(name)[-1] for name in ROUTE_HEADERS if name in headers}


def _headers_for(backend: Backend, exchange: Exchange, headers: CIMultiDict[str]) -> CIMultiDict[str]:
    if backend.is_ollama or exchange.request_id_is_uuid:
        return headers
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() != "x-request-id")


def _routing_model(exchange: Exchange) -> str | None:
    """The model a request must find on its backend. A pull brings one that exists nowhere yet, and a
    create needs only its base (`from`) where it runs."""
    if exchange.path == "/api/pull":
        return None
    if exchange.path == "/api/create" and exchange.body is not None:
        base = exchange.body.get("from")
        return base if isinstance(base, str) and base else None
    return exchange.model


def _loaded_a_model(final: dict[str, Any]) -> bool:
    """Ollama reports time spent getting a runner: more than a blink means a load or reload happened,
    so /api/ps is worth reading again (on a warm model it is not)."""
    load_ns = final.get("load_duration")
    return isinstance(load_ns, int) and load_ns > _LOAD_NOTICEABLE_NS


def _json_object(payload: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
