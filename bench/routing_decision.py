"""How long one routing decision takes, with 4, 32 and 100 backends.

Not a test. Measures, in process and without I/O:

  - `Router.decide`: what every proxied request pays (takes the pool's current in-flight and queued
    counts, reuses the cached columns of everything else, then selects),
  - the same after a completion before each decision, as on a server where every decision follows
    one: a slot freed (the load snapshot is rebuilt) and a learned-latency observation (the model's
    latency row is re-read), and
  - `select` alone over prebuilt columns (`Fleet`, `Load`): the pure filtering and scoring,

each also with every backend's slots full and requests queued ("queued" rows), where every estimate
carries a queue wait.

Backends are laptop-like (npu/igpu/nvidia/cpu characteristics repeated), each reporting a few
models with some loaded, some in flight and queued work, so every factor is computed. Issue 5's
target: under 50 us per decision at 100 backends. Reports medians over `--rounds` rounds.

Usage: python bench/routing_decision.py [--rounds 7] [--decisions 20000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from functools import partial

from ollama_proxy.config.load import validate
from ollama_proxy.core.admission import Priority
from ollama_proxy.core.modes import EfficiencyMode
from ollama_proxy.core.routing.select import select
from ollama_proxy.core.routing.state import RouteRequest
from ollama_proxy.service.pool import BackendPool
from ollama_proxy.service.router import Router
from ollama_proxy.service.tasks import TaskSet
from ollama_proxy.testing.memory import MemoryTransport

# hardware -> (power_watts, avg_latency_ms)
LAPTOP = {"npu": (3, 800), "igpu": (12, 400), "nvidia": (55, 120), "cpu": (28, 1500)}
MODELS = ["llama3.2", "qwen3:4b", "nomic-embed-text", "gemma3:1b"]


def build_router(n: int, rng: random.Random, *, congested: bool = False) -> Router:
    hardware = list(LAPTOP)
    config = validate({"backends": [
        {"id": f"b{i}", "hardware": hardware[i % 4], "endpoint": f"http://127.0.0.1:{20000 + i}",
         "characteristics": {"power_watts": LAPTOP[hardware[i % 4]][0],
                             "avg_latency_ms": LAPTOP[hardware[i % 4]][1], "max_concurrent": 4}}
        for i in range(n)]})
    pool = BackendPool(config.backends, config.router, MemoryTransport(), TaskSet())
    for i, backend in enumerate(pool):
        backend.reachable = True
        backend.models = {f"{m}:latest" if ":" not in m else m for m in MODELS}
        if i % 3 == 0:
            backend.loaded = {"llama3.2:latest": 8192}
        # Some live load, so the load and queue-wait terms are not all zero.
        # Congested: past the four slots, so the estimates carry queue waits (and modes may spill over);
        # b0 keeps a free slot for the completion `decide_after_completion` plays.
        for k in range(rng.randrange(0, 3) + (4 if congested and i else 0)):
            backend.gate.queue.try_acquire(("busy", i, k), Priority.NORMAL, 0.0)
    router = Router(config, pool, rng=rng)
    for i, backend in enumerate(pool):
        if i % 2 == 0:
            router.latency.observe(backend.id, "llama3.2", ttft_ms=50.0 + i, total_ms=900.0, tokens_per_s=40.0)
    return router


def decide_after_completion(router: Router, request: RouteRequest) -> None:
    queue = router.pool.backends["b0"].gate.queue
    queue.try_acquire("completed", Priority.NORMAL, 0.0)
    queue.release("completed", 0.0)
    router.latency.observe("b0", "llama3.2", ttft_ms=60.0, total_ms=900.0, tokens_per_s=40.0)
    router.decide(request)


def per_call_us(fn: Callable[[], object], calls: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--decisions", type=int, default=20000)
    args = parser.parse_args()
    requests = {
        "plain": RouteRequest(model="llama3.2"),
        "latency-critical + power cap": RouteRequest(model="llama3.2", latency_critical=True,
                                                     max_power_watts=30.0, priority=Priority.HIGH),
    }
    print(f"median of {args.rounds} rounds; microseconds per decision")
    print(f"{'backends':>8}  {'request':<30} {'Router.decide':>14} {'after a completion':>19} {'select':>7}")
    for n, congested in ((4, False), (4, True), (32, False), (32, True), (100, False), (100, True)):
        rng = random.Random(n)
        router = build_router(n, rng, congested=congested)
        calls = max(1000, args.decisions * 4 // n)
        for name, request in requests.items():
            name = f"{name}, queued" if congested else name
            fleet, load = router.fleet(time.monotonic()), router.load()
            decide = per_call_us(partial(router.decide, request), calls, args.rounds)
            completed = per_call_us(partial(decide_after_completion, router, request), calls, args.rounds)
            pure = per_call_us(partial(select, request, fleet, load, EfficiencyMode.BALANCED, rng=rng),
                               calls, args.rounds)
            print(f"{n:>8}  {name:<30} {decide:>14.1f} {completed:>19.1f} {pure:>7.1f}")


if __name__ == "__main__":
    main()
