"""The composition root: config in, a running proxy out.

The only module that knows every part; each resource is acquired and released in one
cleanup context, in order, so startup and shutdown read side by side.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ollama_proxy.adapters.http.edge import EdgeLimits, EdgeListener
from ollama_proxy.adapters.http.front import HttpFront
from ollama_proxy.adapters.http.metrics import Metrics
from ollama_proxy.adapters.http.server import EDGE_KEY, FRONT_KEY, AdminEndpoints, build_http_app
from ollama_proxy.adapters.sysfs.monitor import SystemMonitor
from ollama_proxy.adapters.upstream.aiohttp_client import AiohttpTransport
from ollama_proxy.config.schema import Config
from ollama_proxy.errors import ListenError
from ollama_proxy.service.context import ContextService
from ollama_proxy.service.decisions import DecisionLog
from ollama_proxy.service.listings import Listings
from ollama_proxy.service.pipeline import Pipeline
from ollama_proxy.service.pool import BackendPool
from ollama_proxy.service.router import Router
from ollama_proxy.service.status import StatusViews
from ollama_proxy.service.tasks import TaskSet
from ollama_proxy.service.transport import Transport

log = logging.getLogger("ollama_proxy")
LISTENER_KEY = web.AppKey("listener", EdgeListener)


def build_app(config: Config, *, clock: Callable[[], float] = time.monotonic,
              rng: random.Random | None = None, transport: Transport | None = None) -> web.Application:
    """Every part of the proxy, built and wired here and nowhere else.

    `clock` (monotonic seconds), `rng` and `transport` (how backends are reached) are the seams tests
    use: an in-memory transport runs the whole proxy without a backend socket.
    """
    tasks = TaskSet()
    pool = BackendPool(config.backends, config.router, transport or AiohttpTransport(), tasks, clock=clock)
    monitor = SystemMonitor(config.system, clock=clock)
    router = Router(config, pool, monitor, rng=rng or random.Random(), clock=clock)
    context = ContextService(config.context, pool, tasks)
    metrics = Metrics(pool, router, context)
    decisions = DecisionLog()
    pipeline = Pipeline(config, pool, router, context, Listings(pool), decisions=decisions,
                        on_failure=metrics.count_failure)
    edge = EdgeLimits(max_connections=config.server.max_connections,
                      header_timeout_s=config.server.header_timeout_s,
                      keepalive_timeout_s=config.server.keepalive_timeout_s,
                      on_internal_error=lambda: metrics.count_failure("internal_error"))
    app = build_http_app(config, front=HttpFront(config, pipeline, metrics),
                         admin=AdminEndpoints(StatusViews(config, pool, router, context, decisions, clock=clock)),
                         metrics=metrics, edge=edge)

    async def system_ctx(_: web.Application) -> AsyncIterator[None]:
        async with monitor:
            yield

    async def backends_ctx(_: web.Application) -> AsyncIterator[None]:
        await pool.start()
        yield
        await pool.close()

    async def tasks_ctx(_: web.Application) -> AsyncIterator[None]:
        yield
        await tasks.cancel_all()  # what is still running at shutdown (tokenizer builds, refreshes)

    app.cleanup_ctx.append(system_ctx)
    app.cleanup_ctx.append(tasks_ctx)
    app.cleanup_ctx.append(backends_ctx)
    return app


async def start(config: Config, *, host: str | None = None, port: int | None = None,
                transport: Transport | None = None) -> web.AppRunner:
    """Start serving and return the runner (`bound_port(runner)` tells the port; port 0 picks one).

    The address is bound first: when it is taken, ListenError says so before anything else started.
    """
    app = build_app(config, transport=transport)
    listener = app[LISTENER_KEY] = EdgeListener(app[EDGE_KEY])
    host = host or config.server.host
    port = config.server.http_port if port is None else port
    try:
        await listener.bind(host, port)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc

    async def stop_listening(_: web.Application) -> None:
        listener.close()

    app.on_shutdown.append(stop_listening)
    # The grace period is waited out in `drain`; what aiohttp still finds running after it is cut.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    assert runner.server is not None
    await listener.serve(runner.server)
    return runner


async def drain(runner: web.AppRunner, grace_s: float) -> None:
    """Stop accepting, let requests and streams in flight finish for up to `grace_s`, then close."""
    front = runner.app[FRONT_KEY]
    runner.app[LISTENER_KEY].close()
    if runner.server is not None:
        runner.server.pre_shutdown()  # idle keep-alive connections close now, busy ones after their reply
    at_start = front.in_flight
    if at_start:
        log.info("shutting down: waiting up to %g s (server.shutdown_grace_s) for %d request(s) in flight",
                 grace_s, at_start)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while front.in_flight and loop.time() < deadline:
        await asyncio.sleep(0.05)
    cut = front.in_flight
    await runner.cleanup()
    log.info("shut down: %d request(s) drained, %d cut", at_start - min(cut, at_start), cut)


def bound_port(runner: web.AppRunner) -> int:
    return runner.app[LISTENER_KEY].port


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
