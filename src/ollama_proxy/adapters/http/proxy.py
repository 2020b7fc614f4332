"""The forwarding pipeline: read what a decision needs, pick a backend, send, relay back.

Hot path rules: the body is parsed only on JSON endpoints (model name, stream flag, context
sizing), re-encoded only when something in it changed, and response bytes are relayed as they
arrive without being parsed, except the final line whose metrics feed the learning.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from ollama_proxy.adapters.backends import Backend, BackendPool
from ollama_proxy.adapters.http.errors import error_response, is_openai_path, stream_error_line
from ollama_proxy.adapters.http.upstream import forwardable_request_headers, forwardable_response_headers
from ollama_proxy.adapters.routing import Router
from ollama_proxy.config.schema import Config
from ollama_proxy.core.ollama_api import (
    AGGREGATE_PATHS,
    JSON_PATHS,
    MANAGEMENT_PATHS,
    ContextRoute,
    SizeMode,
    canonical_model,
    model_of,
    split_context_route,
)
from ollama_proxy.core.routing.breaker import Outcome, classify_status
from ollama_proxy.core.routing.headers import decision_headers, parse_route_headers
from ollama_proxy.core.routing.select import RoutingDecision
from ollama_proxy.core.routing.state import RouteRequest
from ollama_proxy.core.streams import LastLine
from ollama_proxy.errors import BadRequest, NoBackendAvailable, OllamaProxyError, UpstreamError, UpstreamTimeout

log = logging.getLogger("ollama_proxy.access")

# Responses with a known length up to this size are read whole and sent in one write.
_BUFFER_LIMIT = 1 << 20
_CHAT_DONE = b'"done":true'
# Generate and chat streams end with a `done: true` line; a stream without one was cut short.
_DONE_TERMINATED = frozenset({"/api/generate", "/api/chat"})


def new_request_id() -> str:
    return os.urandom(8).hex()


@dataclass(slots=True)
class Exchange:
    """Everything one request accumulates on its way through the proxy."""

    request_id: str
    method: str
    route: ContextRoute
    started: float
    body: dict[str, Any] | None = None
    raw_body: bytes | None = None
    model: str | None = None
    backend: Backend | None = None
    status: int = 0
    headers_out: dict[str, str] = field(default_factory=dict)
    failure: str | None = None

    @property
    def path(self) -> str:
        return self.route.path


class ProxyHandler:
    def __init__(self, config: Config, pool: BackendPool, router: Router) -> None:
        self.config = config
        self.pool = pool
        self.router = router
        self._max_failover = config.router.max_failover
        self._management_default = config.router.default_backend
        self._aggregating = sum(b.enabled for b in config.backends) > 1
        self._default_route = SizeMode(config.context.default_route.value)
        self._drop_auth = frozenset({"authorization", "x-api-key"}) if config.server.api_keys else frozenset()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        exchange = Exchange(
            request_id=request.headers.get("X-Request-ID") or new_request_id(),
            method=request.method,
            route=ContextRoute(self._default_route, request.path),
            started=time.perf_counter(),
        )
        exchange.headers_out["X-Request-ID"] = exchange.request_id
        try:
            response = await self._handle(request, exchange)
        except OllamaProxyError as exc:
            response = self._error(exchange, exc)
        except asyncio.CancelledError:
            exchange.status = 499
            self._log(exchange, "client went away")
            raise
        exchange.status = response.status
        self._log(exchange)
        return response

    async def _handle(self, request: web.Request, exchange: Exchange) -> web.StreamResponse:
        try:
            exchange.route = split_context_route(request.path, self.config.context.sizes, self._default_route)
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        if request.method in ("POST", "PUT", "DELETE", "PATCH") and self._is_json_endpoint(exchange.path):
            await self._read_json(request, exchange)
        if exchange.path in AGGREGATE_PATHS and request.method == "GET" and self._aggregating \
                and "X-Target-Backend" not in request.headers:
            return await self._aggregate(exchange)
        return await self._forward(request, exchange)

    async def _aggregate(self, exchange: Exchange) -> web.Response:
        """/api/tags and /api/ps over every backend: one model list, each entry saying where it is."""
        backends = [b for b in self.pool if b.config.enabled]
        answers = await asyncio.gather(*(b.upstream.get_json(exchange.path, timeout_s=5.0) for b in backends),
                                       return_exceptions=True)
        merged: dict[str, dict[str, Any]] = {}
        for backend, answer in zip(backends, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("%s %s from %s failed: %s", exchange.request_id, exchange.path, backend.id, answer)
                continue
            if exchange.path == "/api/ps":
                backend.apply_ps(answer)
            for entry in answer.get("models") or []:
                key = canonical_model(str(entry.get("model") or entry.get("name")))
                if key in merged:
                    merged[key]["backends"].append(backend.id)
                else:
                    merged[key] = {**entry, "backend": backend.id, "backends": [backend.id]}
        return web.json_response({"models": list(merged.values())}, headers=exchange.headers_out,
                                 dumps=lambda obj: orjson.dumps(obj).decode())

    @staticmethod
    def _is_json_endpoint(path: str) -> bool:
        return path in JSON_PATHS or is_openai_path(path)

    async def _read_json(self, request: web.Request, exchange: Exchange) -> None:
        limit = self.config.server.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise BadRequest(f"request body of {request.content_length} bytes exceeds the proxy's limit "
                             f"of {limit} bytes (server.max_body_bytes)", 413)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise BadRequest(f"request body exceeds the proxy's limit of {limit} bytes "
                             "(server.max_body_bytes)", 413) from exc
        if not raw.strip():
            if exchange.path in ("/api/delete",) or request.method != "POST":
                return
            raise BadRequest("missing request body")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"invalid JSON in request body: {exc}") from exc
        if not isinstance(body, dict):
            raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
        exchange.body, exchange.raw_body = body, raw
        exchange.model = model_of(body)

    async def _route(self, request: web.Request, exchange: Exchange) -> tuple[RouteRequest, RoutingDecision]:
        route_request = parse_route_headers(request.headers, model=exchange.model)
        if route_request.target is None and exchange.path in MANAGEMENT_PATHS and self._management_default:
            route_request = replace(route_request, target=self._management_default)
        decision = self.router.decide(route_request)
        exchange.headers_out.update(decision_headers(decision))
        return route_request, decision

    async def _forward(self, request: web.Request, exchange: Exchange) -> web.StreamResponse:
        route_request, decision = await self._route(request, exchange)
        headers = forwardable_request_headers(request.headers, self._drop_auth)
        # A streamed request body (blob upload) can be sent once only: no failover for it.
        streamed_body = exchange.raw_body is None and request.body_exists
        order = [decision.backend_id, *decision.alternatives][:1 if streamed_body else 1 + self._max_failover]
        last_error: OllamaProxyError | None = None
        for index, backend_id in enumerate(order):
            backend = self.pool.backends[backend_id]
            is_last = index == len(order) - 1
            exchange.backend = backend
            try:
                async with backend.gate.admit(route_request.priority):
                    backend.breaker.on_dispatch(time.monotonic())
                    data: Any = request.content.iter_any() if streamed_body else exchange.raw_body
                    async with backend.upstream.open(request.method, exchange.path,
                                                     query=request.query_string or None,
                                                     headers=headers, data=data) as upstream:
                        if upstream.status >= 500:
                            body = await upstream.read()
                            self.router.record(backend, classify_status(upstream.status, body.decode(
                                errors="replace")))
                            if not is_last:
                                log.warning("%s backend %s answered %d (%s); failing over", exchange.request_id,
                                            backend.id, upstream.status, body[:200].decode(errors="replace"))
                                continue
                        else:
                            self.router.record(backend, Outcome.SUCCESS)
                        return await self._relay(request, exchange, upstream)
            except UpstreamError as exc:
                last_error = exc
                self.router.record(backend, Outcome.TIMEOUT if isinstance(exc, UpstreamTimeout)
                                   else Outcome.CONNECT_ERROR)
                backend.reachable, backend.last_error = False, str(exc)
                log.warning("%s %s", exchange.request_id, exc)
            except NoBackendAvailable as exc:
                # Queue full here: another backend may still have room.
                if exc.status != 429 or is_last:
                    raise
                last_error = exc
            except asyncio.CancelledError:
                self.router.record(backend, Outcome.CLIENT_GONE)
                raise
        raise last_error or NoBackendAvailable("no backend could take the request")

    async def _relay(self, request: web.Request, exchange: Exchange,
                     upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        headers = forwardable_response_headers(upstream.headers)
        headers.update(exchange.headers_out)
        length = upstream.content_length
        if length is not None and length <= _BUFFER_LIMIT and "chunked" not in upstream.headers.get(
                "Transfer-Encoding", ""):
            body = await upstream.read()
            return web.Response(status=upstream.status, body=body, headers=headers)

        response = web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        tail = LastLine()
        content = upstream.content
        failure: str | None = None
        while True:
            try:
                chunk = await content.readany()
            except (TimeoutError, aiohttp.ClientError) as exc:
                failure = f"backend {exchange.backend.id!r} broke off the stream: {exc or type(exc).__name__}" \
                    if exchange.backend else str(exc)
                break
            if not chunk:
                break
            tail.feed(chunk)
            await response.write(chunk)
        sse = "text/event-stream" in upstream.headers.get("Content-Type", "")
        if failure is None and upstream.status == 200 and exchange.path in _DONE_TERMINATED and tail.chunks_seen:
            last = tail.line()
            if _CHAT_DONE not in last.replace(b" ", b"") and b'"error"' not in last:
                failure = f"backend {exchange.backend.id if exchange.backend else '?'!r} ended the stream " \
                          "without a final done line"
        if failure is not None:
            exchange.failure = failure
            log.warning("%s %s", exchange.request_id, failure)
            await response.write(stream_error_line(failure, sse))
        await response.write_eof()
        return response

    def _error(self, exchange: Exchange, exc: OllamaProxyError) -> web.Response:
        status = getattr(exc, "status", 500)
        extra: dict[str, Any] = {}
        if isinstance(exc, NoBackendAvailable) and exc.reasons:
            extra["excluded"] = exc.reasons
        exchange.failure = str(exc)
        return error_response(exchange.path, str(exc), status, headers=exchange.headers_out,
                              retry_after_s=getattr(exc, "retry_after_s", None), **extra)

    def _log(self, exchange: Exchange, note: str | None = None) -> None:
        elapsed_ms = (time.perf_counter() - exchange.started) * 1000
        log.info("%s %s %s model=%s backend=%s status=%d %.1fms%s", exchange.request_id, exchange.method,
                 exchange.route.path, exchange.model or "-", exchange.backend.id if exchange.backend else "-",
                 exchange.status, elapsed_ms,
                 f" error={exchange.failure!r}" if exchange.failure else (f" ({note})" if note else ""))
