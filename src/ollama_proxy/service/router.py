"""The router as the server uses it: live pool state in, a `RoutingDecision` out, outcomes back.

It turns the pool's mutable facts into the frozen `BackendView`s and the columns (`Fleet`) that
the pure `core.routing.select` decides from, holds the efficiency mode the user set (and what
`auto` resolves to from the system monitor), and keeps the learned latency book, fed only by real
inference (`core.routing.latency.sample_kind`). (Each attempt's outcome goes to the pool, which owns
the breakers.)

Every request pays for its decision, so the columns are kept between requests and rebuilt only
when something in them changes: the pool's revision (reachability, models, residency, breaker
events), a breaker's clock running out, or a new system sample (thermal). Learned latency is
re-read per model by the fleet itself, and in-flight and queued counts come from the pool's
`load.LoadBoard`, which each admission queue updates as it changes.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import cache
from typing import Any, Protocol

from ollama_proxy.config.schema import Config
from ollama_proxy.core.modes import POLICIES, EfficiencyMode
from ollama_proxy.core.operations import Operation
from ollama_proxy.core.routing.fleet import ELIGIBLE, Fleet
from ollama_proxy.core.routing.latency import LOAD_NOTICEABLE_MS, LatencyBook, sample_kind
from ollama_proxy.core.routing.load import Load
from ollama_proxy.core.routing.select import RoutingDecision, select
from ollama_proxy.core.routing.state import BackendView, BreakerState, RouteRequest, SampleKind, ThermalState
from ollama_proxy.core.routing.weights import Weights, weights_for
from ollama_proxy.core.system.efficiency import AutoState, effective_mode
from ollama_proxy.core.system.telemetry import SystemSnapshot
from ollama_proxy.core.system.thermal import backend_thermal
from ollama_proxy.errors import NoBackendAvailable
from ollama_proxy.service.pool import Backend, BackendPool

log = logging.getLogger("ollama_proxy.router")


class SystemState(Protocol):
    """What the router reads of the machine (the sysfs monitor provides it)."""

    @property
    def snapshot(self) -> SystemSnapshot | None: ...

    @property
    def auto_state(self) -> AutoState: ...

_COOL = ThermalState()


@cache
def _without_power(mode: EfficiencyMode) -> Weights:
    return replace(weights_for(mode), power=0.0)


class Router:
    def __init__(self, config: Config, pool: BackendPool, monitor: SystemState | None = None,
                 *, rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.pool = pool
        self.monitor = monitor
        self.latency = LatencyBook()
        self._clock = clock
        self.set_mode = config.router.default_mode
        # Called after `choose_mode` changed the set mode (the D-Bus front signals it).
        self.on_mode_change: Callable[[], None] = lambda: None
        self._rng = rng or random.Random()
        self._thermal_of: SystemSnapshot | None = None
        enabled = [b for b in pool if b.config.enabled]
        self._single = enabled[0] if len(pool.backends) == 1 and enabled else None
        self._single_cached: RoutingDecision | None = None
        self._thermal: dict[str, ThermalState] = {}
        self._fleet: Fleet | None = None
        self._fleet_key: tuple[int, SystemSnapshot | None] | None = None
        self._fleet_expires = math.inf

    def effective_mode(self) -> tuple[EfficiencyMode, str]:
        """The mode selection uses now and why (`auto` resolves from the machine's state)."""
        if self.set_mode is EfficiencyMode.AUTO and not self.config.router.auto_optimize:
            return EfficiencyMode.BALANCED, "auto: router.auto_optimize is off, acting as balanced"
        return effective_mode(self.set_mode, self.monitor.auto_state if self.monitor else None)

    def weights(self, mode: EfficiencyMode) -> Weights | None:
        """The mode's weights; with `router.power_aware` off, power does not count (unless a request asks)."""
        return None if self.config.router.power_aware else _without_power(mode)

    def choose_mode(self, mode: EfficiencyMode) -> None:
        if mode == self.set_mode:
            return
        log.info("efficiency mode set to %s (was %s)", mode.value, self.set_mode.value)
        self.set_mode = mode
        self.on_mode_change()

    def decide(self, request: RouteRequest) -> RoutingDecision:
        # A set mode needs no resolving, nor the text explaining it (GET /efficiency's).
        mode = self.set_mode if self.set_mode is not EfficiencyMode.AUTO else self.effective_mode()[0]
        cap = self.config.router.ultra_efficiency_max_watts if POLICIES[mode].power_capped else None
        single = self._single
        if single is not None and request.target is None and request.max_latency_ms is None \
                and request.max_power_watts is None and (cap is None or single.config.characteristics.power_watts
                                                         <= cap):
            # One backend and nothing to check against it: there is no choice to compute.
            return self._single_decision(single, mode)
        fleet, load = self.fleet(self._clock()), self.load()
        try:
            return select(request, fleet, load, mode, self.weights(mode), rng=self._rng, power_cap_w=cap)
        except NoBackendAvailable:
            if (fleet.exclusion == ELIGIBLE).any():
                raise
        # Every backend failed its last check. Rather than refuse on stale news, try them anyway:
        # one may be back, and if not the client gets the real connect error (502 naming it).
        hopeful = [replace(v, healthy=True, breaker=BreakerState.CLOSED) for v in fleet.views]
        return select(request, Fleet(hopeful, self.latency), load, mode, self.weights(mode), rng=self._rng,
                      power_cap_w=cap)

    def _single_decision(self, backend: Backend, mode: EfficiencyMode) -> RoutingDecision:
        c = backend.config.characteristics
        if self._single_cached is None or self._single_cached.mode is not mode:
            self._single_cached = RoutingDecision(
                backend_id=backend.id, alternatives=(), estimated_latency_ms=c.avg_latency_ms,
                estimated_power_w=c.power_watts, reason=f"only-candidate; mode-{mode.value}, the only configured "
                "backend", mode=mode, scores={}, excluded={})
        return self._single_cached

    def fleet(self, now: float) -> Fleet:
        """The columns selection reads, rebuilt only when a fact in them has changed."""
        key = (self.pool.revision, self.monitor.snapshot if self.monitor else None)
        if self._fleet is None or key != self._fleet_key or now >= self._fleet_expires:
            self._fleet = Fleet(self.views(now), self.latency)
            self._fleet_key = key
            self._fleet_expires = min((b.breaker.routing_state_expiry(now) for b in self.pool), default=math.inf)
        return self._fleet

    def load(self) -> Load:
        """In flight and queued per backend, in pool order (rows match the fleet's)."""
        return self.pool.load_board.load()

    def views(self, now: float | None = None) -> list[BackendView]:
        now = self._clock() if now is None else now
        return [self._view(b, now) for b in self.pool]

    def thermal(self, backend: Backend) -> ThermalState:
        snapshot = self.monitor.snapshot if self.monitor else None
        if snapshot is None:
            return _COOL
        if snapshot is not self._thermal_of:  # judged once per sample, not once per request
            self._thermal = {b.id: backend_thermal(b.config, snapshot, self.config.system).state
                             for b in self.pool}
            self._thermal_of = snapshot
        return self._thermal.get(backend.id, _COOL)

    def _view(self, backend: Backend, now: float) -> BackendView:
        c = backend.config
        queue = backend.gate.queue
        return BackendView(
            id=backend.id, hardware=c.hardware.value, type=c.type, enabled=c.enabled,
            power_watts=c.characteristics.power_watts, avg_latency_ms=c.characteristics.avg_latency_ms,
            priority=c.characteristics.priority, max_concurrent=c.characteristics.max_concurrent,
            healthy=backend.reachable is not False, breaker=backend.breaker.routing_state(now),
            models=frozenset(backend.models) if backend.models is not None else None,
            loaded=backend.loaded, in_flight=queue.in_flight, queued=queue.depth_by_level(),
            latency=self.latency.for_backend(backend.id),
            embedding_latency=self.latency.for_backend(backend.id, SampleKind.EMBEDDING),
            load_ms=self.latency.loads_for(backend.id),
            thermal=self.thermal(backend),
        )

    def observe_latency(self, backend: Backend, model: str, *, ttft_ms: float, total_ms: float,
                        final: Mapping[str, Any] | None, operation: Operation = Operation.GENERATE,
                        body: Mapping[str, Any] | None = None) -> None:
        """Learn from a finished call: its times when it was real work (a load, unload or management
        call teaches nothing about serving speed), and its load time whenever Ollama reported one."""
        load_ns = final.get("load_duration") if final else None
        load_ms = load_ns / 1e6 if isinstance(load_ns, int) else 0.0
        kind = sample_kind(operation, body, final)
        if kind is None:
            if load_ms >= LOAD_NOTICEABLE_MS and operation.runs_model:
                self.latency.observe_load(backend.id, model, load_ms)
            return
        tokens_per_s = reply_tokens = None
        if final:
            eval_count, eval_ns = final.get("eval_count"), final.get("eval_duration")
            if isinstance(eval_count, int):
                reply_tokens = eval_count
                if isinstance(eval_ns, int) and eval_ns > 0:
                    tokens_per_s = eval_count / eval_ns * 1e9
        self.latency.observe(backend.id, model, ttft_ms=ttft_ms, total_ms=total_ms, tokens_per_s=tokens_per_s,
                             load_ms=load_ms, kind=kind, reply_tokens=reply_tokens)

    def backends_status(self) -> list[dict[str, Any]]:
        now = self._clock()
        out = []
        for backend in self.pool:
            status = backend.status()
            thermal = self.thermal(backend)
            status.update({
                "breaker": backend.breaker.state(now).value,
                "consecutive_failures": backend.breaker.consecutive_failures,
                "queue": dict(zip(("best-effort", "normal", "high", "critical"),
                                  backend.gate.queue.depth_by_level(), strict=True)),
                "in_flight": backend.gate.queue.in_flight,
                "learned_latency": {m: {"ttft_ms": round(s.ttft_ms, 1), "tokens_per_s":
                                        round(s.tokens_per_s, 1) if s.tokens_per_s else None,
                                        "samples": s.samples}
                                    for m, s in {**self.latency.for_backend(backend.id, SampleKind.EMBEDDING),
                                                 **self.latency.for_backend(backend.id)}.items()},
                "learned_load_ms": {m: round(ms, 1) for m, ms in self.latency.loads_for(backend.id).items()},
                "thermal": {"level": thermal.level.value, "temp_c": thermal.temp_c, "reason": thermal.reason},
            })
            out.append(status)
        return out
