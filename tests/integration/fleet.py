"""Four simulated backends (npu, igpu, nvidia, cpu, as on a laptop) behind the real proxy, and the
helpers the routing, admission and system-state tests drive them with."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from ollama_proxy.sim import SimServer

# hardware/profile -> (power_watts, avg_latency_ms)
LAPTOP = {"npu": (3, 800), "igpu": (12, 400), "nvidia": (55, 120), "cpu": (28, 1500)}
INFERENCE_PATHS = ("/api/chat", "/api/generate", "/api/embed")
TIMEOUT = aiohttp.ClientTimeout(total=30)


@dataclass
class Fleet:
    """The proxy's base URL and the simulator behind each backend id (id = hardware = profile)."""

    url: str
    sims: dict[str, SimServer]

    async def get(self, path: str) -> Any:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(self.url + path) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def sim_stats(self, backend: str) -> dict[str, Any]:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(self.sims[backend].url + "/sim/stats") as r:
            return await r.json()

    async def served(self) -> dict[str, int]:
        """Inference requests each live simulator has seen (health checks and discovery not counted)."""
        counts = {}
        for backend, sim in self.sims.items():
            if sim._runner is None:  # stopped by the test
                continue
            requests = (await self.sim_stats(backend))["requests"]
            counts[backend] = sum(requests.get(p, 0) for p in INFERENCE_PATHS)
        return counts

    async def fault(self, backend: str, **fault: Any) -> None:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, \
                s.post(self.sims[backend].url + "/sim/faults", json=fault) as r:
            assert r.status == 200, await r.text()

    async def kill(self, backend: str) -> None:
        await self.sims[backend].__aexit__(None, None, None)

    async def backend_status(self, backend: str) -> dict[str, Any]:
        listing = (await self.get("/backends"))["backends"]
        return next(b for b in listing if b["id"] == backend)

    async def wait_for(self, predicate: Callable[[], Any], what: str, timeout_s: float = 15.0) -> None:
        """Poll `predicate` (async) until true: background timers run on their own schedule."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not await predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)


async def start_fleet(sim_factory: Callable[..., Any], proxy_factory: Callable[..., Any], *,
                      extra_models: Mapping[str, list[str]] | None = None, router: Mapping[str, Any] | None = None,
                      system: Mapping[str, Any] | None = None, max_concurrent: int = 4,
                      endpoints: Mapping[str, str] | None = None, **sim_kwargs: Any) -> Fleet:
    """Four simulators and the proxy in front of them; `sim_kwargs` go to every `SimConfig`.

    `endpoints` points a backend somewhere else than its in-process simulator (which then idles).
    """
    sims = {}
    for profile in LAPTOP:
        models = ["llama3.2", "qwen3:4b", "nomic-embed-text", *(extra_models or {}).get(profile, [])]
        sims[profile] = await sim_factory(profile=profile, models=models, **sim_kwargs)
    backends = [{"id": p, "hardware": p, "endpoint": (endpoints or {}).get(p, sim.url),
                 "characteristics": {"power_watts": LAPTOP[p][0], "avg_latency_ms": LAPTOP[p][1],
                                     "max_concurrent": max_concurrent}}
                for p, sim in sims.items()]
    # No real nvidia-smi in tests: the GPU readings come only from tests that fake one.
    config = {"backends": backends, "router": dict(router or {}),
              "system": {"nvidia_smi": "/nonexistent/nvidia-smi", **(system or {})}}
    return Fleet(await proxy_factory(config), sims)


async def chat(url: str, headers: Mapping[str, str] | None = None, *, model: str = "llama3.2",
               ) -> tuple[int, Mapping[str, str], Any]:
    body = {"model": model, "stream": False, "messages": [{"role": "user", "content": "hello"}]}
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, \
            s.post(url + "/api/chat", json=body, headers=dict(headers or {})) as r:
        return r.status, r.headers.copy(), await r.json()


def only(counts: Mapping[str, int], backend: str, n: int = 1) -> dict[str, int]:
    """The per-simulator counts expected when `backend` served all `n` requests."""
    return {b: n if b == backend else 0 for b in counts}
