"""The aiohttp application: routes, authentication, CORS, and the proxy's own endpoints.

Built by `ollama_proxy.app` (the composition root), which hands in the parts it built.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web

from ollama_proxy.adapters.http.edge import EdgeLimits
from ollama_proxy.adapters.http.front import HttpFront
from ollama_proxy.adapters.http.metrics import Metrics
from ollama_proxy.adapters.http.replies import error_response, json_response
from ollama_proxy.adapters.http.statuspage import PAGE_PATHS, StatusPage
from ollama_proxy.adapters.websocket.front import PATH as WEBSOCKET_PATH
from ollama_proxy.adapters.websocket.front import WebSocketFront
from ollama_proxy.config.schema import Config
from ollama_proxy.core.modes import EfficiencyMode
from ollama_proxy.errors import BadRequest
from ollama_proxy.service.status import StatusViews

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Reloading(Protocol):
    async def reload(self) -> dict[str, Any]:
        """Re-read and apply the configuration; BadRequest when it cannot be (the old one stays)."""

# The front's in-flight count is what a shutdown waits on.
FRONT_KEY = web.AppKey("front", HttpFront)
EDGE_KEY = web.AppKey("edge", EdgeLimits)
# Open sockets are closed (1001) by a shutdown once their requests drained.
WEBSOCKET_KEY = web.AppKey("websocket", WebSocketFront)
_CORS_HEADERS = "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, X-Request-ID, " \
                "X-Target-Backend, X-Priority, X-Latency-Critical, X-Power-Efficient, X-Max-Latency-Ms, " \
                "X-Max-Power-Watts, X-Media-Type, X-API-Key, x-stainless-*"


class AdminEndpoints:
    """The proxy's own views over HTTP (the data comes from `service.status`)."""

    def __init__(self, views: StatusViews) -> None:
        self.views = views
        self.reloader: Reloading | None = None

    async def reload(self, request: web.Request) -> web.Response:
        if self.reloader is None:
            return error_response(request.path, "reloading is not wired in this proxy", 501)
        try:
            return json_response(await self.reloader.reload())
        except BadRequest as exc:
            return error_response(request.path, str(exc), exc.status)

    async def backends(self, request: web.Request) -> web.Response:
        return json_response(self.views.backends())

    async def get_efficiency(self, request: web.Request) -> web.Response:
        return json_response(self.views.efficiency())

    async def set_efficiency(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            return json_response(self.views.set_mode(str(body["mode"])))
        except (orjson.JSONDecodeError, TypeError, KeyError):
            return error_response(request.path, 'expected a JSON body like {"mode": "efficiency"}; modes: '
                                  + ", ".join(m.value for m in EfficiencyMode), 400)
        except ValueError as exc:
            return error_response(request.path, str(exc), 400)

    async def status(self, request: web.Request) -> web.Response:
        return json_response(self.views.overview())

    async def thermal(self, request: web.Request) -> web.Response:
        return json_response(self.views.thermal())

    async def health(self, request: web.Request) -> web.Response:
        health = self.views.health()
        return json_response(health, status=503 if health["status"] == "down" else 200)


def build_http_app(config: Config, *, front: HttpFront, websocket: WebSocketFront, admin: AdminEndpoints,
                   metrics: Metrics, edge: EdgeLimits) -> web.Application:
    """The routes and their guards over the parts the composition root built."""
    # Authentication and CORS wrap each route's handler rather than being aiohttp middlewares:
    # aiohttp builds the middleware chain on every request, which cost more than the checks.
    guards: list[Callable[[Handler], Handler]] = []
    if config.server.api_keys:
        guards.append(_require_api_key(config.server.api_keys))
    cors = _Cors(config.server.cors_origins) if config.server.cors_origins else None
    if cors is not None:
        # Outside authentication: a browser sends its preflight without credentials.
        guards.append(cors.guard)
    guards.append(edge.guard)

    def guarded(handler: Handler) -> Handler:
        for guard in guards:  # the last one runs first
            handler = guard(handler)
        return handler

    app = web.Application(client_max_size=config.server.max_body_bytes)
    app[FRONT_KEY] = front
    app[EDGE_KEY] = edge
    app[WEBSOCKET_KEY] = websocket
    if cors is not None:
        app.on_response_prepare.append(cors.on_prepare)
    app.router.add_get("/health", guarded(admin.health))
    app.router.add_get("/backends", guarded(admin.backends))
    app.router.add_get("/efficiency", guarded(admin.get_efficiency))
    app.router.add_post("/efficiency", guarded(admin.set_efficiency))
    app.router.add_get("/thermal", guarded(admin.thermal))
    app.router.add_get("/status", guarded(admin.status))
    app.router.add_post("/admin/reload", guarded(admin.reload))
    app.router.add_get("/metrics", guarded(metrics.handle))
    page = StatusPage()
    app.router.add_get("/ui", guarded(page.index))
    app.router.add_get("/ui/{file:[^/]*}", guarded(page.asset))
    # Before the catch-all, which would forward it to a backend; the guards apply to the upgrade.
    app.router.add_get(WEBSOCKET_PATH, guarded(websocket.handle))
    # [\s\S]: a decoded path may hold a newline (%0A), which ".*" would leave to aiohttp's text 404.
    app.router.add_route("*", r"/{tail:[\s\S]*}", guarded(front.handle))
    return app


def _require_api_key(keys: tuple[str, ...]) -> Callable[[Handler], Handler]:
    encoded = [k.encode() for k in keys]

    def guard(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            # Only /health and the status page's files are open: a load balancer's or container's health
            # check carries no key, nor does a browser opening the page (whose data requests do).
            if request.path == "/health" or request.path in PAGE_PATHS:
                return await handler(request)
            given = request.headers.get("X-API-Key") or request.headers.get("Authorization", "").removeprefix(
                "Bearer ").strip()
            try:
                # Header bytes that are not UTF-8 reach us as surrogate escapes: compare the bytes sent.
                given_bytes = given.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                given_bytes = b""
            if not any(hmac.compare_digest(given_bytes, key) for key in encoded):
                return error_response(request.path, "missing or invalid API key (send Authorization: Bearer "
                                      "<key> or X-API-Key)", 401)
            return await handler(request)

        return checked

    return guard


class _Cors:
    """CORS for browser clients: Ollama refuses foreign origins with an empty 403, and the proxy
    strips Origin before forwarding, so the proxy is where origins are allowed or refused."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.origins = frozenset(origins)
        self.allow_all = "*" in self.origins

    def allowed(self, origin: str) -> bool:
        # Allowing http://localhost allows it on any port, as Ollama's defaults do.
        scheme_host = origin.rsplit(":", 1)[0] if origin.count(":") == 2 else origin
        return self.allow_all or origin in self.origins or scheme_host in self.origins

    def guard(self, handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            origin = request.headers.get("Origin")
            if origin is None:
                return await handler(request)
            if not self.allowed(origin):
                return error_response(request.path, f"origin {origin!r} is not allowed (server.cors_origins)", 403)
            if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
                return web.Response(status=204, headers={
                    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, HEAD, OPTIONS",
                    "Access-Control-Allow-Headers": _CORS_HEADERS})
            return await handler(request)

        return checked

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        # Streams are prepared inside the handler, so headers go on here rather than in the guard.
        origin = request.headers.get("Origin")
        if origin is not None and self.allowed(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "*"
            response.headers["Vary"] = "Origin"
