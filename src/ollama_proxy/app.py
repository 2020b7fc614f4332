"""The composition root: config in, a running proxy out.

The only module that knows every part; each resource is acquired and released in one
cleanup context, in order, so startup and shutdown read side by side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from ollama_proxy.adapters.backends import BackendPool
from ollama_proxy.adapters.context import ContextService
from ollama_proxy.adapters.http.server import build_http_app
from ollama_proxy.adapters.routing import Router
from ollama_proxy.adapters.sysfs.monitor import SystemMonitor
from ollama_proxy.config.schema import Config

log = logging.getLogger("ollama_proxy")


def build_app(config: Config) -> web.Application:
    pool = BackendPool(config.backends, config.router)
    monitor = SystemMonitor(config.system)
    router = Router(config, pool, monitor)
    app = build_http_app(config, pool, router, ContextService(config.context))

    async def system_ctx(_: web.Application) -> AsyncIterator[None]:
        async with monitor:
            yield

    async def backends_ctx(_: web.Application) -> AsyncIterator[None]:
        await pool.start()
        yield
        await pool.close()

    app.cleanup_ctx.append(system_ctx)
    app.cleanup_ctx.append(backends_ctx)
    return app


async def start(config: Config, *, host: str | None = None, port: int | None = None) -> web.AppRunner:
    """Start serving and return the runner (its `addresses` tell the bound port; port 0 picks one)."""
    runner = web.AppRunner(build_app(config), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host or config.server.host,
                       config.server.http_port if port is None else port, reuse_address=True)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    return int(runner.addresses[0][1])


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def install_fast_loop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve_forever(config: Config) -> None:
    runner = await start(config)
    log.info("ollama-proxy listening on http://%s:%d with backends: %s", config.server.host, bound_port(runner),
             ", ".join(f"{b.id}={b.endpoint}" for b in config.backends))
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
