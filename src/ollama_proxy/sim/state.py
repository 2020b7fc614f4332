"""Everything one simulated server holds between requests, reachable from handlers by `SIM_STATE`.

Ties the registry, scheduler, stats and faults together and knows how to reset them. Holds no
request logic itself.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from aiohttp import web

from ollama_proxy.sim.config import SimConfig
from ollama_proxy.sim.faults import FaultBox
from ollama_proxy.sim.models import Registry, install
from ollama_proxy.sim.scheduler import Scheduler
from ollama_proxy.sim.stats import SimStats


class SimState:
    def __init__(self, config: SimConfig, wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.wall = wall
        self.faults = FaultBox()
        # Draws the /v1 response ids (`chatcmpl-<0..998>`), reproducibly per seed.
        self.rng = random.Random(config.seed)
        self.registry = Registry()
        self.stats = SimStats()
        self.scheduler = Scheduler(config, self.stats, wall)
        self._install_configured()

    def _install_configured(self) -> None:
        now = self.wall()
        # Earlier entries in the config look newer, so /api/tags lists them in config order.
        for age, spec in enumerate(self.config.model_specs()):
            self.registry.add(install(spec, now - 60.0 * (age + 1)))

    def reset(self) -> None:
        """Back to the state right after start: configured models only, nothing loaded, no faults."""
        self.faults.clear()
        self.scheduler.unload_all()
        self.registry = Registry()
        self.stats = SimStats()
        self.scheduler = Scheduler(self.config, self.stats, self.wall)
        self._install_configured()


SIM_STATE = web.AppKey("sim_state", SimState)
