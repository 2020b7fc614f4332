"""The floor of any Python process in the path: a uvloop TCP relay that copies bytes both ways, no HTTP.

Each client connection gets a connection of its own to the upstream, and bytes go on as they arrive
(what comes before the upstream connection is up waits for it). Not a proxy: the yardstick for what
the proxy's per-request and per-chunk work adds above an event loop's own cost, which a relay this
bare pays too. Run by `proxy_overhead.py` (`--systems relay`); usage:
python bench/byte_relay.py LISTEN_PORT UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop


class _Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self._client = client

    def data_received(self, data: bytes) -> None:
        self._client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client.close()


class _Client(asyncio.Protocol):
    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._upstream: asyncio.Transport | None = None
        self._early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        asyncio.get_running_loop().create_task(self._connect(cast(asyncio.Transport, transport)))

    async def _connect(self, client: asyncio.Transport) -> None:
        self._upstream, _ = await asyncio.get_running_loop().create_connection(
            lambda: _Upstream(client), "127.0.0.1", self._upstream_port)
        for data in self._early:
            self._upstream.write(data)
        self._early.clear()

    def data_received(self, data: bytes) -> None:
        if self._upstream is None:
            self._early.append(data)
        else:
            self._upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._upstream is not None:
            self._upstream.close()


async def serve(port: int, upstream_port: int) -> None:
    server = await asyncio.get_running_loop().create_server(lambda: _Client(upstream_port), "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
