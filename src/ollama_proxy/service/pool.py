"""The backend pool: each configured server with its client (from the `service.transport` port) and
what we know of it now (reachable, models, loaded models and their context, breaker), refreshed on
timers and after responses.

The pool is the one writer of that live state: the pipeline, the context service and the listings
report what they learned through its named methods (`record`, `mark_unreachable`, `assume_loaded`,
`apply_ps`, `refresh_models_soon`, `refresh_loaded_soon`). The routing decision itself is pure and
lives in `core.routing`; this module only gathers the facts it decides from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from ollama_proxy.config.schema import BackendConfig, RouterConfig
from ollama_proxy.core.admission import AdmissionQueue
from ollama_proxy.core.ollama_api import canonical_model
from ollama_proxy.core.routing.breaker import CircuitBreaker, Outcome
from ollama_proxy.core.routing.load import LoadBoard
from ollama_proxy.errors import OllamaProxyError
from ollama_proxy.service.admission import AdmissionGate
from ollama_proxy.service.tasks import TaskSet
from ollama_proxy.service.transport import BackendClient, Transport

log = logging.getLogger("ollama_proxy.backends")

CONTROL_TIMEOUT_S = 5.0


# The `Backend` attributes the router caches: setting one to a different value calls the backend's
# `on_change`, so the router rebuilds its columns then and only then (see `service/router.py`).
# Caught in `__setattr__`, not with descriptors: they are read on every request and written rarely.
_ROUTING_FACTS = frozenset({"reachable", "models", "loaded"})
_UNSET = object()


class Backend:
    """One configured server and the live facts about it."""

    reachable: bool | None  # None until the first health check answered
    models: set[str] | None  # canonical names; None until discovered
    loaded: dict[str, int]  # canonical model -> context_length from /api/ps

    def __init__(self, config: BackendConfig, router: RouterConfig, client: BackendClient, *,
                 clock: Callable[[], float] = time.monotonic, on_change: Callable[[], None] = lambda: None,
                 on_load: Callable[[AdmissionQueue[object]], None] | None = None) -> None:
        self.config = config
        self.id = config.id
        self.is_ollama = config.type == "ollama"  # read several times per request: not a pydantic field read
        # Called when anything routing reads changes: reachability, models, residency, breaker.
        # In-flight and queued counts change far more often and go to `on_load` instead.
        self.on_change = on_change
        self.client = client
        self._clock = clock
        self.reachable = None
        self.last_error: str | None = None
        self.version: str | None = None
        self.models = None
        self.tags: list[dict[str, Any]] = []  # /api/tags entries as the backend reported them
        self.digests: dict[str, str] = {}  # canonical model -> digest (names the exact tokenizer)
        self.loaded = {}
        self.ps: list[dict[str, Any]] = []
        self.breaker = CircuitBreaker(router.breaker_failures, router.breaker_reset_s,
                                      on_change=lambda: self.on_change())
        self.gate = AdmissionGate.from_config(config.id, config.characteristics.max_concurrent, router.queue,
                                              on_change=on_load)
        self._ps_refresh: asyncio.Task[None] | None = None
        self._models_refresh: asyncio.Task[None] | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        changed = name in _ROUTING_FACTS and self.__dict__.get(name, _UNSET) != value
        object.__setattr__(self, name, value)
        if changed:
            self.on_change()

    def has_model(self, model: str) -> bool | None:
        """True/False once the model list is known; None while it is not."""
        if self.models is None:
            return None
        return canonical_model(model) in self.models

    def digest_of(self, model: str) -> str | None:
        return self.digests.get(canonical_model(model))

    def loaded_context(self, model: str) -> int | None:
        return self.loaded.get(canonical_model(model))

    async def check_health(self) -> bool:
        path = "/api/version" if self.is_ollama else "/v1/models"
        try:
            answer = await self.client.get_json(path, timeout_s=CONTROL_TIMEOUT_S)
        except OllamaProxyError as exc:
            if self.reachable is not False:
                log.warning("backend %s unreachable: %s", self.id, exc)
            self.reachable, self.last_error = False, str(exc)
            self.breaker.record(Outcome.CONNECT_ERROR, self._clock())
            return False
        if self.reachable is not True:
            log.info("backend %s reachable at %s", self.id, self.config.endpoint)
        self.reachable, self.last_error = True, None
        # A health check that answers is the breaker's half-open probe.
        self.breaker.record(Outcome.SUCCESS, self._clock())
        if self.is_ollama and isinstance(answer, dict):
            self.version = str(answer.get("version", ""))
        return True

    async def refresh_models(self) -> None:
        """Model list and residency: /api/tags and /api/ps (OpenAI-type: /v1/models)."""
        try:
            if self.is_ollama:
                tags, ps = await asyncio.gather(
                    self.client.get_json("/api/tags", timeout_s=CONTROL_TIMEOUT_S),
                    self.client.get_json("/api/ps", timeout_s=CONTROL_TIMEOUT_S))
                self.tags = list(tags.get("models") or [])
                self.apply_ps(ps)
            else:
                listing = await self.client.get_json("/v1/models", timeout_s=CONTROL_TIMEOUT_S)
                self.tags = [{"name": m.get("id"), "model": m.get("id")} for m in listing.get("data") or []]
        except (OllamaProxyError, AttributeError, TypeError) as exc:
            log.debug("model discovery on %s failed: %s", self.id, exc)
            return
        named = [(canonical_model(str(t.get("name") or t.get("model"))), t) for t in self.tags
                 if t.get("name") or t.get("model")]
        self.models = {name for name, _ in named}
        self.digests = {name: str(t["digest"]) for name, t in named if t.get("digest")}

    async def refresh_loaded(self) -> None:
        if not self.is_ollama:
            return
        try:
            self.apply_ps(await self.client.get_json("/api/ps", timeout_s=CONTROL_TIMEOUT_S))
        except OllamaProxyError as exc:
            log.debug("refreshing /api/ps on %s failed: %s", self.id, exc)


    def apply_ps(self, ps: Any) -> None:
        self.ps = list(ps.get("models") or []) if isinstance(ps, dict) else []
        self.loaded = {canonical_model(str(m.get("model") or m.get("name"))): int(m.get("context_length") or 0)
                       for m in self.ps if m.get("model") or m.get("name")}

    def status(self) -> dict[str, Any]:
        c = self.config
        return {
            "id": self.id, "name": c.name or self.id, "type": c.type, "hardware": c.hardware.value,
            "endpoint": c.endpoint, "enabled": c.enabled, "reachable": self.reachable,
            "last_error": self.last_error, "version": self.version,
            "models": sorted(self.models) if self.models is not None else None,
            "loaded": [{"model": m, "context_length": ctx} for m, ctx in sorted(self.loaded.items())],
            "characteristics": c.characteristics.model_dump(),
        }


class BackendPool:
    """All backends, keyed by id, with the timers that keep their facts fresh."""

    def __init__(self, backends: tuple[BackendConfig, ...], router: RouterConfig, transport: Transport,
                 tasks: TaskSet, *, clock: Callable[[], float] = time.monotonic,
                 previous: BackendPool | None = None) -> None:
        """`previous`: the pool a configuration reload replaces. Its backends whose settings did not change
        are taken over as they are (connections, breaker, queue, what was learned), not rebuilt."""
        self.router = router
        self._tasks = tasks
        self._clock = clock
        # Bumped whenever any backend's routing facts change: the router's cache key.
        self.revision = 0
        self._holders: dict[str, Backend | None] = {}
        self._holders_revision = 0
        # In flight and queued per backend, in pool order, kept by the admission queues themselves.
        self.load_board = LoadBoard(len(backends))
        kept = previous.backends if previous is not None and previous.router == router else {}
        self.backends: dict[str, Backend] = {}
        for row, config in enumerate(backends):
            backend = kept.get(config.id)
            if backend is not None and backend.config == config:
                self._take_over(backend, row)
            else:
                backend = Backend(config, router, transport.client_for(config, router), clock=clock,
                                  on_change=self._changed, on_load=partial(self.load_board.count, row))
            self.backends[config.id] = backend
        self.taken_over = frozenset(b.id for b in self if kept.get(b.id) is b)
        self._timers: list[asyncio.Task[Any]] = []

    def _take_over(self, backend: Backend, row: int) -> None:
        backend.on_change = self._changed
        backend.gate.queue.on_change = partial(self.load_board.count, row)
        self.load_board.count(row, backend.gate.queue)

    def _changed(self) -> None:
        self.revision += 1

    def __iter__(self) -> Iterator[Backend]:
        return iter(self.backends.values())

    def get(self, backend_id: str) -> Backend | None:
        return self.backends.get(backend_id)

    def holder_of(self, model: str) -> Backend | None:
        """A backend known to have `model` (the source of its tokenizer), if any; asked on every
        sized request, so the answer is kept until a model list changes."""
        if self._holders_revision != self.revision:
            self._holders.clear()
            self._holders_revision = self.revision
        try:
            return self._holders[model]
        except KeyError:
            holder = self._holders[model] = next((b for b in self if b.has_model(model)), None)
            return holder

    async def start(self) -> None:
        for backend in self:
            if backend.id not in self.taken_over:
                await backend.client.start()
        # A disabled backend is never contacted: not probed, not listed, never shown reachable.
        enabled = [b for b in self if b.config.enabled]
        for backend in self:
            if not backend.config.enabled:
                backend.last_error = "disabled in the configuration (enabled: false)"
        await asyncio.gather(*(self._refresh(b) for b in enabled))
        self._timers = [self._tasks.spawn(self._keep_fresh(b), name=f"backend-{b.id}") for b in enabled]

    async def close(self, keep: frozenset[str] = frozenset()) -> None:
        """Stop the timers and close the backends' connections, except those of `keep` (taken over by
        the pool of a reloaded configuration)."""
        self.stop_refreshing()
        await asyncio.gather(*self._timers, return_exceptions=True)
        for backend in self:
            if backend.id not in keep:
                await backend.client.close()

    def stop_refreshing(self) -> None:
        for timer in self._timers:
            timer.cancel()

    def idle(self, keep: frozenset[str] = frozenset()) -> bool:
        """Nothing in flight or queued on the backends other than `keep`'s."""
        return all(not b.gate.queue.in_flight and not b.gate.queue.queued for b in self if b.id not in keep)

    # What requests learn about a backend, written here and nowhere else.

    def record(self, backend: Backend, outcome: Outcome) -> None:
        """One finished attempt's outcome, for the backend's breaker."""
        now = self._clock()
        before = backend.breaker.state(now)
        after = backend.breaker.record(outcome, now)
        if after != before:
            log.warning("backend %s breaker %s -> %s after %s", backend.id, before.value, after.value,
                        outcome.value)

    def dispatching(self, backend: Backend) -> None:
        """A request is being sent; in half-open it becomes the breaker's probe."""
        backend.breaker.on_dispatch(self._clock())

    def mark_unreachable(self, backend: Backend, error: str) -> None:
        backend.reachable, backend.last_error = False, error

    def assume_loaded(self, backend: Backend, model: str, context_length: int) -> None:
        """A request was just sent that makes Ollama load (or keep) `model` at this size: remember it now,
        so the next request reuses it even before /api/ps is read again."""
        key = canonical_model(model)
        loaded = backend.loaded
        if loaded.get(key) != context_length:
            # Assigned, not mutated in place: the router caches residency and notices only assignments.
            backend.loaded = {**loaded, key: context_length}

    def apply_ps(self, backend: Backend, ps: Any) -> None:
        backend.apply_ps(ps)

    def refresh_loaded_soon(self, backend: Backend) -> None:
        """Re-read /api/ps after a response (a load or reload may have happened), at most one at a time."""
        if backend.is_ollama and (backend._ps_refresh is None or backend._ps_refresh.done()):
            backend._ps_refresh = self._tasks.spawn(backend.refresh_loaded(), name=f"ps-{backend.id}")

    def refresh_models_soon(self, backend: Backend) -> None:
        """Re-read the model list after a management call changed it, not at the next poll."""
        if backend._models_refresh is None or backend._models_refresh.done():
            backend._models_refresh = self._tasks.spawn(backend.refresh_models(), name=f"models-{backend.id}")

    async def _refresh(self, backend: Backend) -> None:
        if await backend.check_health():
            await backend.refresh_models()

    async def _keep_fresh(self, backend: Backend) -> None:
        interval = self.router.health_interval_s
        discovery_every = max(1, round(self.router.discovery_interval_s / interval))
        tick = 0
        while True:
            await asyncio.sleep(interval)
            tick += 1
            was_reachable = backend.reachable
            if await backend.check_health() and (not was_reachable or tick % discovery_every == 0):
                await backend.refresh_models()
