"""The stateful services behind the fronts, and how a configuration reload swaps them (SIGHUP,
`POST /admin/reload`). Part of the composition root (`app.py` builds the first set here too).

A reload reads and validates the configuration again; on any error the running one stays and the
error is logged and returned. Otherwise a new set of services is built that takes over what the old
one learned (backends whose settings did not change keep their connections, breaker, queue and
models; latency estimates, calibrations and tokenizers carry over), the fronts switch to it for new
requests, and the old set is retired once the requests still using it are done, so in-flight requests
finish on the settings they started with. `server` and `system` settings (listen addresses, keys,
limits, sensors) and `desktop.dbus` need a restart: a reload that changes them says so and leaves them
as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ollama_proxy.config.schema import Config
from ollama_proxy.errors import BadRequest, ConfigError
from ollama_proxy.service.context import ContextService
from ollama_proxy.service.decisions import DecisionLog
from ollama_proxy.service.listings import Listings
from ollama_proxy.service.pipeline import Pipeline
from ollama_proxy.service.pool import BackendPool
from ollama_proxy.service.router import Router, SystemState
from ollama_proxy.service.status import StatusViews
from ollama_proxy.service.tasks import TaskSet
from ollama_proxy.service.transport import Transport

log = logging.getLogger("ollama_proxy.reload")

_RESTART_ONLY = ("server", "system")


@dataclass(frozen=True, slots=True)
class Services:
    config: Config
    pool: BackendPool
    router: Router
    context: ContextService
    pipeline: Pipeline
    views: StatusViews


@dataclass(frozen=True, slots=True)
class Seams:
    """What every set of services shares: how backends are reached, background tasks, the machine's
    state, the decision log, the failure counter, and the clock and randomness tests inject."""

    transport: Transport
    tasks: TaskSet
    monitor: SystemState | None
    decisions: DecisionLog
    on_failure: Callable[[str], None]
    clock: Callable[[], float]
    rng: random.Random


def build_services(config: Config, seams: Seams, previous: Services | None = None) -> Services:
    pool = BackendPool(config.backends, config.router, seams.transport, seams.tasks, clock=seams.clock,
                       previous=previous.pool if previous else None)
    router = Router(config, pool, seams.monitor, rng=seams.rng, clock=seams.clock)
    context = ContextService(config.context, pool, seams.tasks)
    if previous is not None:
        router.latency = previous.router.latency
        # A mode chosen at run time stays, unless the file now names a different default.
        if config.router.default_mode == previous.config.router.default_mode:
            router.set_mode = previous.router.set_mode
        context.take_over(previous.context)
    pipeline = Pipeline(config, pool, router, context, Listings(pool), decisions=seams.decisions,
                        on_failure=seams.on_failure)
    views = StatusViews(config, pool, router, context, seams.decisions, clock=seams.clock)
    return Services(config, pool, router, context, pipeline, views)


class Reloader:
    def __init__(self, services: Services, seams: Seams, *, switch: Callable[[Services], None],
                 load: Callable[[], Config] | None, grace_s: float) -> None:
        """`switch` points the fronts and views at a new set of services (the composition root knows them)."""
        self.services = services
        self._seams = seams
        self._switch = switch
        self._load = load
        self._grace_s = grace_s
        self._lock = asyncio.Lock()
        self._retiring: dict[int, tuple[Services, frozenset[str]]] = {}
        self.reloads = 0
        # Told when a reload begins and when it is over, applied or not, whoever asked for it (SIGHUP,
        # POST /admin/reload): the composition root tells the service manager.
        self.on_reloading: Callable[[], None] = lambda: None
        self.on_reloaded: Callable[[], None] = lambda: None

    async def reload(self) -> dict[str, Any]:
        """Re-read the configuration and apply it; BadRequest (the old one kept) when it cannot be."""
        if self._load is None:
            raise BadRequest("this proxy was started without a configuration to re-read", 409)
        async with self._lock:
            self.on_reloading()
            try:
                old = self.services
                try:
                    loaded = self._load()
                except ConfigError as exc:
                    log.error("configuration not reloaded, the running one stays: %s", exc)
                    raise BadRequest(f"configuration not reloaded, the running one stays: {exc}") from exc
                restart = [name for name in _RESTART_ONLY if getattr(loaded, name) != getattr(old.config, name)]
                unchanged: dict[str, Any] = {name: getattr(old.config, name) for name in _RESTART_ONLY}
                # Joining or leaving the session bus happens at start; the rest of `desktop` applies now.
                if loaded.desktop.dbus != old.config.desktop.dbus:
                    restart.append("desktop.dbus")
                    unchanged["desktop"] = loaded.desktop.model_copy(update={"dbus": old.config.desktop.dbus})
                config = loaded.model_copy(update=unchanged)
                fresh = build_services(config, self._seams, old)
                await fresh.pool.start()
                self._switch(fresh)
                self.services = fresh
                self.reloads += 1
                old.pool.stop_refreshing()
                self._seams.tasks.spawn(self._retire(old, fresh.pool.taken_over), name="retire-services")
            finally:
                self.on_reloaded()
        kept, built = sorted(fresh.pool.taken_over), sorted(set(fresh.pool.backends) - fresh.pool.taken_over)
        gone = sorted(set(old.pool.backends) - set(fresh.pool.backends))
        log.info("configuration reloaded: backends kept %s, new or changed %s, removed %s%s", kept or "-",
                 built or "-", gone or "-", f"; needs a restart to apply: {', '.join(restart)}" if restart else "")
        return {"reloaded": True, "backends": {"kept": kept, "new_or_changed": built, "removed": gone},
                "restart_needed": restart}

    def spawn_reload(self) -> None:
        """Reload in the background, the outcome only logged (SIGHUP)."""
        self._seams.tasks.spawn(self._reload_logged(), name="reload")

    async def _reload_logged(self) -> None:
        with contextlib.suppress(BadRequest):  # already logged, and the running configuration stays
            await self.reload()

    async def _retire(self, old: Services, keep: frozenset[str]) -> None:
        self._retiring[id(old)] = (old, keep)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._grace_s
        while not old.pool.idle(keep) and loop.time() < deadline:
            await asyncio.sleep(0.1)
        if self._retiring.pop(id(old), None) is not None:
            await old.pool.close(keep)

    async def close(self) -> None:
        """At shutdown: the current services and any old ones still waiting to retire."""
        retiring, self._retiring = list(self._retiring.values()), {}
        for old, keep in retiring:
            await old.pool.close(keep)
        await self.services.pool.close()

