"""The listening socket's side of the edge: a cap on open client connections, a deadline for a
new connection's first request headers, and JSON errors for what aiohttp refuses itself.

aiohttp closes a connection that stays idle `keepalive_timeout` after its last response, and a new
one that sends no complete request in that time; a slow sender (slowloris) would still hold a
connection for the whole keep-alive time. Here a new connection that has not started a request
within `header_timeout_s` is closed, and past `max_connections` a new connection is answered 503 at
once and closed, so descriptors and memory stay bounded whatever clients do.

A request aiohttp's parser refuses (a request target that is not origin-form, bad header bytes, an
oversized header) never reaches a route: `_JsonErrorHandler` answers it in the proxy's JSON error
shape with one log line instead of aiohttp's text/plain reply and traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from ollama_proxy.adapters.http.replies import error_response

log = logging.getLogger("ollama_proxy.edge")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class EdgeLimits:
    def __init__(self, *, max_connections: int, header_timeout_s: float, keepalive_timeout_s: float,
                 on_internal_error: Callable[[], None] = lambda: None) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.on_internal_error = on_internal_error
        self.refused = 0
        # Connections that have not started their first request yet; left when one starts or the
        # deadline passes, so it never holds more than a deadline's worth of connections.
        self._pending: set[RequestHandler] = set()

    def guard(self, handler: Handler) -> Handler:
        """Wraps every route: a request that reached a handler had its headers in time."""
        pending = self._pending

        async def started(request: web.Request) -> web.StreamResponse:
            pending.discard(request.protocol)
            return await handler(request)

        return started

    def factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        loop = asyncio.get_running_loop()

        def make() -> asyncio.Protocol:
            if not self.admits(len(server.connections)):
                return _Refusal()
            handler = self.handler(server, loop)
            self._pending.add(handler)
            loop.call_later(self.header_timeout_s, self._deadline, handler)
            return handler

        return make

    def admits(self, open_connections: int) -> bool:
        """Whether one more connection may open; False counts (and now and then logs) a refusal."""
        if open_connections < self.max_connections:
            return True
        self.refused += 1
        if self.refused == 1 or self.refused % 1000 == 0:
            log.warning("refusing a connection: %d open (server.max_connections); %d refused so far",
                        self.max_connections, self.refused)
        return False

    @staticmethod
    def refusal() -> asyncio.Protocol:
        return _Refusal()

    def handler(self, server: web.Server, loop: asyncio.AbstractEventLoop) -> RequestHandler:
        """aiohttp's connection handler with the proxy's keep-alive time and JSON errors."""
        return _JsonErrorHandler(server, loop=loop, keepalive_timeout=self.keepalive_timeout_s,
                                 access_log=None, on_internal_error=self.on_internal_error)

    def _deadline(self, handler: RequestHandler) -> None:
        if handler in self._pending:
            self._pending.discard(handler)
            if handler.transport is not None:
                handler.force_close()


class _JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler, answering what it refuses itself in the proxy's JSON shape."""

    __slots__ = ("_on_internal_error",)

    def __init__(self, manager: web.Server, *, on_internal_error: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._on_internal_error = on_internal_error

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            self._on_internal_error()
            log.error("unexpected error outside the request handlers (%s %s)", request.method, request.path,
                      exc_info=exc)
            text = "internal error in the proxy"
        else:
            text = f"malformed HTTP request: {(message or str(exc) or 'refused').strip().splitlines()[0]}"
            log.warning("refused a malformed request from %s: %s", request.remote, text)
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started: no error answer can follow it")
        path = request.path if request.path.startswith("/") else "/"
        response = error_response(path, text, status)
        response.force_close()
        return response


class EdgeListener:
    """The listening socket: bound before anything else starts, so a taken address fails at once with
    nothing to undo, and serving through `EdgeLimits` once the application is ready."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._factory: Callable[[], asyncio.Protocol] | None = None
        self._on_close: Callable[[], None] = lambda: None

    async def bind(self, host: str, port: int) -> None:
        """Raises OSError when the address cannot be had."""
        self._server = await asyncio.get_running_loop().create_server(
            self._protocol, host, port, reuse_address=True, start_serving=False)

    async def serve(self, factory: Callable[[], asyncio.Protocol], on_close: Callable[[], None] = lambda: None
                    ) -> None:
        """Accept connections, each served by a protocol from `factory`; `on_close` runs when accepting stops."""
        assert self._server is not None, "bind() first"
        self._factory = factory
        self._on_close = on_close
        await self._server.start_serving()

    def close(self) -> None:
        """Stop accepting; connections already open carry on (as `on_close` lets them)."""
        if self._server is not None:
            self._server.close()
        self._on_close()

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets, "bind() first"
        return int(self._server.sockets[0].getsockname()[1])

    def _protocol(self) -> asyncio.Protocol:
        assert self._factory is not None, "serve() before accepting"
        return self._factory()


_REFUSAL_BODY = orjson.dumps({"error": "too many open connections to the proxy (server.max_connections); "
                                       "retry shortly"})
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n"
            + _REFUSAL_BODY)


class _Refusal(asyncio.Protocol):
    """Answers a connection over the cap with a 503 and closes it, without reading the request."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_REFUSAL)
        transport.close()
