"""A faithful simulator of Ollama's HTTP API, for tests, benchmarks and `ollama-proxy demo`.

It models what a proxy must cope with: load delays, reloads whenever the effective num_ctx
changes, silent truncation, parallel slots and the 503 queue, Ollama's exact shapes and error
texts (native and /v1), and faults switched at runtime (`POST /sim/faults`). `GET /sim/stats`
shows counters for assertions. It is a tool that ships with the proxy, not part of the core.

    async with SimServer(SimConfig(models=["llama3.2"], profile="npu", time_scale=0)) as sim:
        ...  # talk to sim.url
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ollama_proxy.sim.config import PROFILES, ModelSpec, Profile, SimConfig
from ollama_proxy.sim.faults import Fault
from ollama_proxy.sim.tokenize import approx_token_count, model_info_from_gguf

if TYPE_CHECKING:
    from ollama_proxy.sim.app import SimServer, build_sim_app, run_sim

__all__ = [
    "PROFILES",
    "Fault",
    "ModelSpec",
    "Profile",
    "SimConfig",
    "SimServer",
    "approx_token_count",
    "build_sim_app",
    "model_info_from_gguf",
    "run_sim",
]


def __getattr__(name: str) -> Any:
    # The server (aiohttp and every handler) loads on first use: the proxy's command line reads the
    # simulator's arguments and profiles on every start, and most starts never run a simulator.
    if name in ("SimServer", "build_sim_app", "run_sim"):
        from ollama_proxy.sim import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
