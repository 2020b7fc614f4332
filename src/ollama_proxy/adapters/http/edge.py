"""Connection limits at the listening socket: a cap on open client connections and a deadline for a
new connection's first request headers.

aiohttp closes a connection that stays idle `keepalive_timeout` after its last response, and a new
one that sends no complete request in that time; a slow sender (slowloris) would still hold a
connection for the whole keep-alive time. Here a new connection that has not started a request
within `header_timeout_s` is closed, and past `max_connections` a new connection is answered 503 at
once and closed, so descriptors and memory stay bounded whatever clients do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("ollama_proxy.edge")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class EdgeLimits:
    def __init__(self, *, max_connections: int, header_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.refused = 0
        self.timed_out = 0
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
            if len(server.connections) >= self.max_connections:
                self.refused += 1
                if self.refused == 1 or self.refused % 1000 == 0:
                    log.warning("refusing a connection: %d open (server.max_connections); %d refused so far",
                                self.max_connections, self.refused)
                return _Refusal()
            handler = server()
            self._pending.add(handler)
            loop.call_later(self.header_timeout_s, self._deadline, handler)
            return handler

        return make

    def _deadline(self, handler: RequestHandler) -> None:
        if handler in self._pending:
            self._pending.discard(handler)
            if handler.transport is not None:
                self.timed_out += 1
                handler.force_close()


class EdgeSite(web.TCPSite):
    """A TCP site whose connections go through `EdgeLimits`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, limits: EdgeLimits) -> None:
        super().__init__(runner, host, port, reuse_address=True)
        self._limits = limits

    async def start(self) -> None:
        # As TCPSite.start, with the limited protocol factory in place of the runner's server.
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._limits.factory(server), self._host, self._port, backlog=self._backlog, reuse_address=True)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


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
