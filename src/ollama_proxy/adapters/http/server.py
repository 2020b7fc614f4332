"""The aiohttp application: routes, authentication, CORS, and the proxy's own endpoints.

Built by `ollama_proxy.app` (the composition root), which hands in the parts it built.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web

from ollama_proxy.adapters.http.edge import EdgeLimits
from ollama_proxy.adapters.http.front import HttpFront
from ollama_proxy.adapters.http.guards import KEY_REFUSAL, PREFLIGHT_HEADERS, ApiKeys, CorsPolicy
from ollama_proxy.adapters.http.metrics import Metrics
from ollama_proxy.adapters.http.replies import error_response, json_response
from ollama_proxy.adapters.http.statuspage import StatusPage
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
    api_keys = ApiKeys(keys)

    def guard(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            if api_keys.open_path(request.path) or api_keys.accepts(request.headers.get("X-API-Key"),
                                                                      request.headers.get("Authorization")):
                return await handler(request)
            return error_response(request.path, KEY_REFUSAL, 401)

        return checked

    return guard


class _Cors(CorsPolicy):
    def guard(self, handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            origin = request.headers.get("Origin")
            if origin is None:
                return await handler(request)
            if not self.allowed(origin):
                return error_response(request.path, self.refusal(origin), 403)
            if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
                return web.Response(status=204, headers=PREFLIGHT_HEADERS)
            return await handler(request)

        return checked

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        # Streams are prepared inside the handler, so headers go on here rather than in the guard.
        origin = request.headers.get("Origin")
        if origin is not None and self.allowed(origin):
            for name, value in self.response_headers(origin):
                response.headers[name] = value
