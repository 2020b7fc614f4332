"""The fast engine (`server.engine: fast`): the listening socket's connections start on the llhttp
front (`Connection`), which answers the inference and passthrough paths through the same pipeline,
rules and access log as the aiohttp front and hands every other request's connection to aiohttp's
handler, so the proxy's own views, WebSocket upgrades and the status page are served as before, on
the same port. `server.max_connections` counts the connections of both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from ollama_proxy.adapters.fast.connection import Connection
from ollama_proxy.adapters.fast.framing import DateLine
from ollama_proxy.adapters.http.edge import EdgeLimits
from ollama_proxy.adapters.http.front import HttpFront
from ollama_proxy.adapters.http.guards import ApiKeys, CorsPolicy
from ollama_proxy.config.schema import Config


class FastServer:
    def __init__(self, config: Config, front: HttpFront, edge: EdgeLimits) -> None:
        # The aiohttp front's pipeline, rules, access log and in-flight count: a reload switches both fronts.
        self.front = front
        self.edge = edge
        self.connections: set[Connection] = set()
        self.keys = ApiKeys(config.server.api_keys) if config.server.api_keys else None
        self.cors = CorsPolicy(config.server.cors_origins) if config.server.cors_origins else None
        self.date = DateLine()
        self._aiohttp: web.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def factory(self, aiohttp_server: web.Server) -> Callable[[], asyncio.Protocol]:
        """The listener's protocol factory; connections handed over go to `aiohttp_server`."""
        loop = self._loop = asyncio.get_running_loop()
        self._aiohttp = aiohttp_server
        edge, connections = self.edge, self.connections

        def make() -> asyncio.Protocol:
            if not edge.admits(len(aiohttp_server.connections) + len(connections)):
                return edge.refusal()
            return Connection(self, loop)

        return make

    def hand_over(self, transport: asyncio.Transport, received: bytes) -> None:
        """aiohttp's handler takes the connection, starting with the bytes of the request it is for."""
        assert self._aiohttp is not None and self._loop is not None, "factory() first"
        handler = self.edge.handler(self._aiohttp, self._loop)
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if received:
            handler.data_received(received)

    def close_idle(self) -> None:
        """Stop serving: idle connections close now, busy ones after their answer."""
        for connection in list(self.connections):
            connection.close_when_idle()

    async def shutdown(self, _: web.Application) -> None:
        """What is still being answered when the application shuts down is cut."""
        for connection in list(self.connections):
            connection.cut()
