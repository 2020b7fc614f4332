"""Which models are in memory: loads, reloads, parallel slots, the pending queue and keep-alive.

Models Ollama's scheduler (reference 4.4-4.6, 7.5): a request for a loaded, compatible runner
waits for one of its `num_parallel` slots without limit; a request that needs a (re)load joins a
queue of at most `max_queue` (else 503 busy) and loads happen one at a time. A reload waits for the
old runner's requests to finish. Knows nothing about HTTP or what the model says.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ollama_proxy.sim.config import SimConfig
from ollama_proxy.sim.faults import BUSY_MESSAGE
from ollama_proxy.sim.models import InstalledModel, timestamp
from ollama_proxy.sim.rules import RunnerSettings, SimError, needs_reload
from ollama_proxy.sim.stats import SimStats

# What Ollama shows for "keep forever": an expiry centuries ahead.
_FOREVER_S = 9e9


@dataclass(eq=False, slots=True)
class Runner:
    """One loaded model process, keyed by its weights; `expires_at` is wall-clock, as /api/ps shows it."""

    key: str
    model: InstalledModel
    settings: RunnerSettings
    slots: asyncio.Semaphore
    keep_alive_s: float
    expires_at: float
    # Requests holding or waiting for a slot; `active` counts only those holding one.
    in_flight: int = 0
    active: int = 0

    def ps_entry(self, on_device: bool) -> dict[str, Any]:
        spec = self.model.spec
        # The KV cache grows with the context; a rough 1 KiB per token per billion parameters.
        size = spec.size + self.settings.num_ctx * max(spec.parameter_count // 1_000_000, 1) * 1024 // 1000
        return {"name": self.model.name, "model": self.model.name, "size": size,
                "digest": self.model.digest,
                "details": {"parent_model": "", "format": "gguf", "family": spec.arch,
                            "families": [spec.arch], "parameter_size": spec.parameter_size,
                            "quantization_level": spec.quantization_level},
                "expires_at": timestamp(self.expires_at), "size_vram": size if on_device else 0,
                "context_length": self.settings.num_ctx}


@dataclass(frozen=True, slots=True)
class Lease:
    """A slot on a runner, held for one request. `load_s` is the modelled load time it paid."""

    runner: Runner
    load_s: float


class Scheduler:
    """Owns the loaded runners. `wall` is the clock for keep-alive expiry, replaceable in tests."""

    def __init__(self, config: SimConfig, stats: SimStats, wall: Callable[[], float] = time.time) -> None:
        self._config = config
        self._stats = stats
        self._wall = wall
        self._runners: dict[str, Runner] = {}
        self._load_lock = asyncio.Lock()
        self._released = asyncio.Event()
        self._pending = 0

    def _expires(self, keep_alive_s: float) -> float:
        return self._wall() + (_FOREVER_S if keep_alive_s < 0 else keep_alive_s)

    async def acquire(self, model: InstalledModel, wanted: RunnerSettings,
                      keep_alive_s: float | None) -> Lease:
        """Get a slot on a runner for `model` started with `wanted`, loading or reloading as Ollama would."""
        self._expire()
        runner = self._runners.get(model.weights)
        load_s = 0.0
        if runner is None or needs_reload(runner.settings, wanted):
            if self._pending >= self._config.max_queue:
                self._stats.busy_rejections += 1
                raise SimError(503, BUSY_MESSAGE)
            self._pending += 1
            try:
                async with self._load_lock:
                    runner, load_s = await self._load(model, wanted, keep_alive_s)
            finally:
                self._pending -= 1
        runner.in_flight += 1
        if keep_alive_s is not None:
            runner.keep_alive_s = keep_alive_s
        try:
            await runner.slots.acquire()
        except BaseException:
            runner.in_flight -= 1
            raise
        runner.active += 1
        peak = self._stats.peak_in_flight
        peak[model.name] = max(peak[model.name], runner.active)
        return Lease(runner, load_s)

    def release(self, lease: Lease) -> None:
        runner = lease.runner
        runner.in_flight -= 1
        runner.active -= 1
        runner.slots.release()
        if runner.in_flight == 0:
            if runner.keep_alive_s == 0:
                self._drop(runner)
            else:
                runner.expires_at = self._expires(runner.keep_alive_s)
        self._released.set()

    def unload(self, model: InstalledModel) -> None:
        """keep_alive 0 on an empty request: unload now, or as soon as in-flight requests finish."""
        runner = self._runners.get(model.weights)
        if runner is None:
            return
        runner.keep_alive_s = 0
        if runner.in_flight == 0:
            self._drop(runner)

    def unload_all(self) -> None:
        self._runners.clear()

    def loaded(self) -> list[Runner]:
        """Loaded runners, latest expiry first (the /api/ps order)."""
        self._expire()
        return sorted(self._runners.values(), key=lambda r: -r.expires_at)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {r.model.name: {"context_length": r.settings.num_ctx, "automatic": r.settings.automatic,
                               "shift": r.settings.shift, "load_options": dict(r.settings.load_options),
                               "in_flight": r.in_flight}
                for r in self.loaded()}

    async def _load(self, model: InstalledModel, wanted: RunnerSettings,
                    keep_alive_s: float | None) -> tuple[Runner, float]:
        current = self._runners.get(model.weights)
        if current is not None and not needs_reload(current.settings, wanted):
            return current, 0.0  # someone loaded a compatible runner while we queued
        if current is not None:
            await self._wait_for(lambda: current.in_flight == 0)
            self._drop(current)
            self._stats.reloads[model.name] += 1
        await self._make_room()
        profile = self._config.hardware
        await asyncio.sleep(profile.load_s * self._config.time_scale)
        keep = self._config.keep_alive_s if keep_alive_s is None else keep_alive_s
        parallel = 1 if model.spec.embedding else self._config.num_parallel
        runner = Runner(model.weights, model, wanted, asyncio.Semaphore(parallel), keep, self._expires(keep))
        self._runners[model.weights] = runner
        self._stats.loads[model.name] += 1
        return runner, profile.load_s

    async def _make_room(self) -> None:
        """Evict for OLLAMA_MAX_LOADED_MODELS: the idle runner with the shortest keep-alive goes first."""
        while len(self._runners) >= self._config.max_loaded_models:
            idle = [r for r in self._runners.values() if r.in_flight == 0]
            if idle:
                self._drop(min(idle, key=lambda r: (math.inf if r.keep_alive_s < 0 else r.keep_alive_s,
                                                    r.key)))
            else:
                await self._wait_for(lambda: any(r.in_flight == 0 for r in self._runners.values()))

    async def _wait_for(self, ready: Callable[[], bool]) -> None:
        while not ready():
            # No await between the check and clear(): a release cannot slip in unseen.
            self._released.clear()
            await self._released.wait()

    def _drop(self, runner: Runner) -> None:
        if self._runners.get(runner.key) is runner:
            del self._runners[runner.key]
            self._stats.unloads[runner.model.name] += 1

    def _expire(self) -> None:
        now = self._wall()
        for runner in [r for r in self._runners.values() if r.in_flight == 0 and r.expires_at <= now]:
            self._drop(runner)

