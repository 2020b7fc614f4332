"""The backend pool: each configured server with its pooled upstream and what we know of it
now (reachable, models, loaded models and their context), refreshed on timers and after
responses.

The routing decision itself is pure and lives in `core.routing`; this module only gathers the
facts it decides from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from ollama_proxy.adapters.upstream.aiohttp_client import Upstream
from ollama_proxy.config.schema import BackendConfig, RouterConfig
from ollama_proxy.core.admission import AdmissionQueue
from ollama_proxy.core.ollama_api import canonical_model
from ollama_proxy.core.routing.breaker import CircuitBreaker, Outcome
from ollama_proxy.core.routing.fleet import LoadBoard
from ollama_proxy.errors import OllamaProxyError
from ollama_proxy.service.admission import AdmissionGate
from ollama_proxy.service.tasks import cancel_all, spawn

log = logging.getLogger("ollama_proxy.backends")

CONTROL_TIMEOUT_S = 5.0


class _RoutingFact:
    """A `Backend` attribute the router caches: setting it to a different value calls the backend's
    `on_change`, so the router rebuilds its columns then and only then (see `service/router.py`)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = f"_{name}"

    def __get__(self, backend: Backend | None, owner: type | None = None) -> Any:
        return self if backend is None else getattr(backend, self._name)

    def __set__(self, backend: Backend, value: Any) -> None:
        changed = getattr(backend, self._name, _UNSET) != value
        setattr(backend, self._name, value)
        if changed:
            backend.on_change()


_UNSET = object()


class Backend:
    """One configured server and the live facts about it."""

    reachable = _RoutingFact()  # bool | None: None until the first health check answered
    models = _RoutingFact()  # set[str] | None: canonical names; None until discovered
    loaded = _RoutingFact()  # dict[str, int]: canonical model -> context_length from /api/ps

    def __init__(self, config: BackendConfig, router: RouterConfig, *,
                 on_change: Callable[[], None] = lambda: None,
                 on_load: Callable[[AdmissionQueue[object]], None] | None = None) -> None:
        self.config = config
        self.id = config.id
        # Called when anything routing reads changes: reachability, models, residency, breaker.
        # In-flight and queued counts change far more often and go to `on_load` instead.
        self.on_change = on_change
        self.upstream = Upstream(config.id, config.endpoint, connect_timeout_s=router.connect_timeout_s,
                                 first_byte_timeout_s=router.first_byte_timeout_s,
                                 idle_timeout_s=router.idle_timeout_s, api_key=config.api_key)
        self.reachable: bool | None = None
        self.last_error: str | None = None
        self.version: str | None = None
        self.models: set[str] | None = None
        self.tags: list[dict[str, Any]] = []  # /api/tags entries as the backend reported them
        self.digests: dict[str, str] = {}  # canonical model -> digest (names the exact tokenizer)
        self.loaded: dict[str, int] = {}
        self.ps: list[dict[str, Any]] = []
        self.breaker = CircuitBreaker(router.breaker_failures, router.breaker_reset_s,
                                      on_change=lambda: self.on_change())
        self.gate = AdmissionGate.from_config(config.id, config.characteristics.max_concurrent, router.queue,
                                              on_change=on_load)
        self._ps_refresh: asyncio.Task[None] | None = None

    @property
    def is_ollama(self) -> bool:
        return self.config.type == "ollama"

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
            answer = await self.upstream.get_json(path, timeout_s=CONTROL_TIMEOUT_S)
        except OllamaProxyError as exc:
            if self.reachable is not False:
                log.warning("backend %s unreachable: %s", self.id, exc)
            self.reachable, self.last_error = False, str(exc)
            self.breaker.record(Outcome.CONNECT_ERROR, time.monotonic())
            return False
        if self.reachable is not True:
            log.info("backend %s reachable at %s", self.id, self.config.endpoint)
        self.reachable, self.last_error = True, None
        # A health check that answers is the breaker's half-open probe.
        self.breaker.record(Outcome.SUCCESS, time.monotonic())
        if self.is_ollama and isinstance(answer, dict):
            self.version = str(answer.get("version", ""))
        return True

    async def refresh_models(self) -> None:
        """Model list and residency: /api/tags and /api/ps (OpenAI-type: /v1/models)."""
        try:
            if self.is_ollama:
                tags, ps = await asyncio.gather(
                    self.upstream.get_json("/api/tags", timeout_s=CONTROL_TIMEOUT_S),
                    self.upstream.get_json("/api/ps", timeout_s=CONTROL_TIMEOUT_S))
                self.tags = list(tags.get("models") or [])
                self.apply_ps(ps)
            else:
                listing = await self.upstream.get_json("/v1/models", timeout_s=CONTROL_TIMEOUT_S)
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
            self.apply_ps(await self.upstream.get_json("/api/ps", timeout_s=CONTROL_TIMEOUT_S))
        except OllamaProxyError as exc:
            log.debug("refreshing /api/ps on %s failed: %s", self.id, exc)

    def refresh_loaded_soon(self) -> None:
        """Re-read /api/ps after a response (a load or reload may have happened), at most one at a time."""
        if self.is_ollama and (self._ps_refresh is None or self._ps_refresh.done()):
            self._ps_refresh = spawn(self.refresh_loaded(), name=f"ps-{self.id}")

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

    def __init__(self, backends: tuple[BackendConfig, ...], router: RouterConfig) -> None:
        self.router = router
        # Bumped whenever any backend's routing facts change: the router's cache key.
        self.revision = 0
        # In flight and queued per backend, in pool order, kept by the admission queues themselves.
        self.load_board = LoadBoard(len(backends))
        self.backends: dict[str, Backend] = {
            b.id: Backend(b, router, on_change=self._changed, on_load=partial(self.load_board.count, row))
            for row, b in enumerate(backends)}
        self._tasks: list[asyncio.Task[Any]] = []

    def _changed(self) -> None:
        self.revision += 1

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.backends.values())

    def get(self, backend_id: str) -> Backend | None:
        return self.backends.get(backend_id)

    def holder_of(self, model: str) -> Backend | None:
        """A backend known to have `model` (the source of its tokenizer), if any."""
        return next((b for b in self if b.has_model(model)), None)

    async def start(self) -> None:
        for backend in self:
            await backend.upstream.start()
        await asyncio.gather(*(self._refresh(b) for b in self))
        self._tasks = [spawn(self._keep_fresh(b), name=f"backend-{b.id}") for b in self]

    async def close(self) -> None:
        await cancel_all(self._tasks)
        for backend in self:
            await backend.upstream.close()

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
