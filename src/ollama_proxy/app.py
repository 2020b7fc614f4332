"""The composition root: config in, a running proxy out.

The only module that knows every part; each resource is acquired and released in one
cleanup context, in order, so startup and shutdown read side by side.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web

from ollama_proxy.adapters.http.edge import EdgeSite
from ollama_proxy.adapters.http.server import EDGE_KEY, PROXY_KEY, build_http_app
from ollama_proxy.adapters.sysfs.monitor import SystemMonitor
from ollama_proxy.config.schema import Config
from ollama_proxy.errors import ListenError
from ollama_proxy.service.context import ContextService
from ollama_proxy.service.pool import BackendPool
from ollama_proxy.service.router import Router

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
    """Start serving and return the runner (its `addresses` tell the bound port; port 0 picks one).

    Raises ListenError, with everything already started closed again, when the address is taken.
    """
    app = build_app(config)
    # The grace period is waited out in `drain`; what aiohttp still finds running after it is cut.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    host = host or config.server.host
    port = config.server.http_port if port is None else port
    try:
        await EdgeSite(runner, host, port, limits=app[EDGE_KEY]).start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return runner


async def drain(runner: web.AppRunner, grace_s: float) -> None:
    """Stop accepting, let requests and streams in flight finish for up to `grace_s`, then close."""
    proxy = runner.app[PROXY_KEY]
    for site in list(runner.sites):
        await site.stop()
    if runner.server is not None:
        runner.server.pre_shutdown()  # idle keep-alive connections close now, busy ones after their reply
    at_start = proxy.in_flight
    if at_start:
        log.info("shutting down: waiting up to %g s (server.shutdown_grace_s) for %d request(s) in flight",
                 grace_s, at_start)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while proxy.in_flight and loop.time() < deadline:
        await asyncio.sleep(0.05)
    cut = proxy.in_flight
    await runner.cleanup()
    log.info("shut down: %d request(s) drained, %d cut", at_start - min(cut, at_start), cut)


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
    """Serve until SIGTERM or SIGINT (what `docker stop` and systemd send), then drain."""
    runner = await start(config)
    log.info("ollama-proxy listening on http://%s:%d with backends: %s", config.server.host, bound_port(runner),
             ", ".join(f"{b.id}={b.endpoint}" for b in config.backends))
    await wait_for_stop_signal()
    await drain(runner, config.server.shutdown_grace_s)


async def wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
