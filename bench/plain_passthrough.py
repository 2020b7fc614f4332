"""A plain, well-built aiohttp passthrough: the yardstick the proxy's overhead is compared with.

No routing, no parsing, no sizing: one pooled client session, bytes relayed as they arrive.
Run by `proxy_overhead.py`; usage: python bench/plain_passthrough.py LISTEN_PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web

_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host", "date", "server"})


async def make_app(upstream: str) -> web.Application:
    session: aiohttp.ClientSession | None = None

    async def ctx(_: web.Application):  # type: ignore[no-untyped-def]
        nonlocal session
        session = aiohttp.ClientSession(upstream, auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))
        yield
        await session.close()

    async def handle(request: web.Request) -> web.StreamResponse:
        assert session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with session.request(request.method, request.rel_url.path_qs, headers=headers,
                                   data=await request.read()) as up:
            out = {k: v for k, v in up.headers.items() if k.lower() not in _HOP}
            if up.content_length is not None:
                return web.Response(status=up.status, body=await up.read(), headers=out)
            response = web.StreamResponse(status=up.status, headers=out)
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.cleanup_ctx.append(ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


if __name__ == "__main__":
    import uvloop

    uvloop.install()
    web.run_app(make_app(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
