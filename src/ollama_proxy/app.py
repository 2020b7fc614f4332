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
from typing import TYPE_CHECKING

from aiohttp import web

from ollama_proxy.adapters.dbus.front import DesktopFront
from ollama_proxy.adapters.fast.server import FastServer
from ollama_proxy.adapters.http.edge import EdgeLimits, EdgeListener
from ollama_proxy.adapters.http.front import HttpFront
from ollama_proxy.adapters.http.metrics import Metrics
from ollama_proxy.adapters.http.server import EDGE_KEY, FRONT_KEY, WEBSOCKET_KEY, AdminEndpoints, build_http_app
from ollama_proxy.adapters.sysfs.monitor import SystemMonitor
from ollama_proxy.adapters.systemd.notify import ServiceNotifier
from ollama_proxy.adapters.upstream.aiohttp_client import AiohttpTransport
from ollama_proxy.adapters.upstream.raw_client import RawTransport
from ollama_proxy.adapters.websocket.front import WebSocketFront
from ollama_proxy.config.schema import Config
from ollama_proxy.errors import ListenError
from ollama_proxy.logs import batch_lines
from ollama_proxy.reload import Reloader, Seams, Services, build_services
from ollama_proxy.service.decisions import DecisionLog
from ollama_proxy.service.tasks import TaskSet
from ollama_proxy.service.transport import Transport

if TYPE_CHECKING:
    from ollama_proxy.adapters.grpc.front import GrpcFront
    from ollama_proxy.adapters.grpc.server import GrpcServer

log = logging.getLogger("ollama_proxy")
LISTENER_KEY = web.AppKey("listener", EdgeListener)
GRPC_KEY: web.AppKey[GrpcServer] = web.AppKey("grpc")  # present when server.grpc_enabled
RELOADER_KEY = web.AppKey("reloader", Reloader)


def build_app(config: Config, *, clock: Callable[[], float] = time.monotonic,
              rng: random.Random | None = None, transport: Transport | None = None,
              load: Callable[[], Config] | None = None) -> web.Application:
    """Every part of the proxy, built and wired here and nowhere else.

    `clock` (monotonic seconds), `rng` and `transport` (how backends are reached) are the seams tests
    use: an in-memory transport runs the whole proxy without a backend socket. `load` re-reads the
    configuration for a reload (SIGHUP, POST /admin/reload); without it there is nothing to reload.
    """
    monitor = SystemMonitor(config.system, clock=clock)
    metrics: Metrics | None = None

    def count_failure(kind: str) -> None:
        if metrics is not None:
            metrics.count_failure(kind)

    if transport is None:
        transport = RawTransport() if config.server.upstream_client == "raw" else AiohttpTransport()
    seams = Seams(transport, TaskSet(), monitor, DecisionLog(), count_failure, clock,
                  rng or random.Random())
    services = build_services(config, seams)
    pool, pipeline, views = services.pool, services.pipeline, services.views
    metrics = Metrics(pool, services.router, services.context)
    edge = EdgeLimits(max_connections=config.server.max_connections,
                      header_timeout_s=config.server.header_timeout_s,
                      keepalive_timeout_s=config.server.keepalive_timeout_s,
                      on_internal_error=lambda: count_failure("internal_error"))
    front = HttpFront(config, pipeline, metrics)
    websocket = WebSocketFront(config, pipeline, metrics)
    admin = AdminEndpoints(views)
    desktop = DesktopFront(config.desktop, views, monitor, clock=clock)
    grpc_front: GrpcFront | None = None
    grpc_server = None
    if config.server.grpc_enabled:
        # Imported only when enabled: grpc takes about 75 ms to import, and most proxies never serve it.
        from ollama_proxy.adapters.grpc.front import GrpcFront
        from ollama_proxy.adapters.grpc.server import GrpcServer
        grpc_front = GrpcFront(config, pipeline, views, observe=metrics.observe,
                               on_internal_error=lambda: count_failure("internal_error"))
        grpc_server = GrpcServer(grpc_front, config.server.api_keys)

    def switch(fresh: Services) -> None:
        front.follow(fresh.config, fresh.pipeline)
        websocket.follow(fresh.config, fresh.pipeline)
        if grpc_front is not None:
            grpc_front.follow(fresh.config, fresh.pipeline, fresh.views)
        admin.views = fresh.views
        desktop.follow(fresh.config.desktop, fresh.views)
        metrics.follow(fresh.pool, fresh.router, fresh.context)

    reloader = Reloader(services, seams, switch=switch, load=load, grace_s=config.server.shutdown_grace_s)
    admin.reloader = reloader
    app = build_http_app(config, front=front, websocket=websocket, admin=admin, metrics=metrics, edge=edge)
    app[RELOADER_KEY] = reloader
    if grpc_server is not None:
        app[GRPC_KEY] = grpc_server
    tasks = seams.tasks

    async def system_ctx(_: web.Application) -> AsyncIterator[None]:
        async with monitor:
            yield

    async def desktop_ctx(_: web.Application) -> AsyncIterator[None]:
        await desktop.start()  # on the session bus, or a log line saying why not; never a failure
        yield
        await desktop.close()

    async def backends_ctx(_: web.Application) -> AsyncIterator[None]:
        await pool.start()
        yield
        await reloader.close()

    async def tasks_ctx(_: web.Application) -> AsyncIterator[None]:
        yield
        await tasks.cancel_all()  # what is still running at shutdown (tokenizer builds, refreshes)

    app.cleanup_ctx.append(system_ctx)
    app.cleanup_ctx.append(desktop_ctx)
    app.cleanup_ctx.append(tasks_ctx)
    app.cleanup_ctx.append(backends_ctx)
    return app


async def start(config: Config, *, host: str | None = None, port: int | None = None,
                transport: Transport | None = None, load: Callable[[], Config] | None = None) -> web.AppRunner:
    """Start serving and return the runner (`bound_port(runner)` tells the port; port 0 picks one).

    The address is bound first: when it is taken, ListenError says so before anything else started.
    `load` re-reads the configuration for a reload.
    """
    app = build_app(config, transport=transport, load=load)
    listener = app[LISTENER_KEY] = EdgeListener()
    host = host or config.server.host
    port = config.server.http_port if port is None else port
    try:
        await listener.bind(host, port)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    grpc_server = app.get(GRPC_KEY)
    if grpc_server is not None:
        try:
            grpc_server.bind(host, config.server.grpc_port)
        except ListenError:
            listener.close()
            raise

    async def stop_listening(_: web.Application) -> None:
        listener.close()
        if grpc_server is not None:
            await grpc_server.stop(0)  # after `drain` it has already stopped: this is a no-op then

    app.on_shutdown.append(stop_listening)
    fast = FastServer(config, app[FRONT_KEY], app[EDGE_KEY]) if config.server.engine == "fast" else None
    if fast is not None:
        app.on_shutdown.append(fast.shutdown)
    # The grace period is waited out in `drain`; what aiohttp still finds running after it is cut.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    assert runner.server is not None
    if fast is None:
        await listener.serve(app[EDGE_KEY].factory(runner.server))
    else:
        await listener.serve(fast.factory(runner.server), on_close=fast.close_idle)
    if grpc_server is not None:
        await grpc_server.start()
    batch_lines(asyncio.get_running_loop())  # the log's lines written once per turn of the loop
    return runner


async def drain(runner: web.AppRunner, grace_s: float) -> None:
    """Stop accepting, let requests and streams in flight finish for up to `grace_s`, then close."""
    front, sockets = runner.app[FRONT_KEY], runner.app[WEBSOCKET_KEY]
    sockets.refuse_new_requests()
    runner.app[LISTENER_KEY].close()
    grpc_server = runner.app.get(GRPC_KEY)
    # gRPC's own stop refuses new calls at once, gives those in flight the same grace, then cancels them.
    grpc_stopped = asyncio.ensure_future(grpc_server.stop(grace_s)) if grpc_server is not None else None
    grpc_at_start = grpc_server.in_flight if grpc_server is not None else 0
    if runner.server is not None:
        # Idle keep-alive connections close now, busy ones after their reply. Not a WebSocket's: aiohttp
        # ignores what a closing connection receives, so its client's cancels, pongs and close reply would be
        # lost while its requests drain (`sockets.close_all` closes it below).
        for connection in runner.server.connections:
            if not sockets.serves(connection):
                connection.close()
    at_start = front.in_flight + sockets.in_flight
    if at_start:
        log.info("shutting down: waiting up to %g s (server.shutdown_grace_s) for %d request(s) in flight",
                 grace_s, at_start)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while (front.in_flight or sockets.in_flight) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    cut = front.in_flight + sockets.in_flight
    await sockets.close_all()
    if grpc_server is not None and grpc_stopped is not None:
        while grpc_server.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)
        grpc_cut = grpc_server.in_flight
        await grpc_stopped
        if grpc_at_start:
            log.info("gRPC shut down: %d call(s) drained, %d cut", grpc_at_start - min(grpc_cut, grpc_at_start),
                     grpc_cut)
    await runner.cleanup()
    log.info("shut down: %d request(s) drained, %d cut", at_start - min(cut, at_start), cut)
    batch_lines(None)


def bound_port(runner: web.AppRunner) -> int:
    return runner.app[LISTENER_KEY].port


def bound_grpc_port(runner: web.AppRunner) -> int | None:
    """The gRPC port (None when server.grpc_enabled is off)."""
    grpc_server = runner.app.get(GRPC_KEY)
    return grpc_server.port if grpc_server is not None else None


def install_fast_loop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve_forever(config: Config, load: Callable[[], Config] | None = None,
                        notifier: ServiceNotifier | None = None) -> None:
    """Serve until SIGTERM or SIGINT (what `docker stop` and systemd send), then drain; SIGHUP reloads
    the configuration through `load`. `notifier` tells a service manager when serving starts, reloads, stops."""
    notify = notifier or ServiceNotifier(None)
    runner = await start(config, load=load)
    reloader = runner.app[RELOADER_KEY]
    serving = f"serving on http://{config.server.host}:{bound_port(runner)}"

    reloader.on_reloading = notify.reloading
    reloader.on_reloaded = lambda: notify.ready(serving)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reloader.spawn_reload)
    log.info("ollama-proxy listening on http://%s:%d with backends: %s", config.server.host, bound_port(runner),
             ", ".join(f"{b.id}={b.endpoint}" for b in config.backends))
    router = runner.app[FRONT_KEY].pipeline.router
    mode, why = router.effective_mode()
    log.info("efficiency mode %s%s; status page http://%s:%d/ui", mode.value,
             "" if router.set_mode is mode else f" ({router.set_mode.value}: {why})", config.server.host,
             bound_port(runner))
    if (grpc_port := bound_grpc_port(runner)) is not None:
        log.info("gRPC (ollama_proxy.OllamaProxy, with reflection) on %s:%d", config.server.host, grpc_port)
    notify.ready(serving)
    await wait_for_stop_signal()
    notify.stopping()
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
