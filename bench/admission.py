"""What priority admission costs: the gate on its own, the proxy with it vs a direct connection,
and throughput at concurrency 64 when the backend allows 4 at a time.

Not a test. Three measurements, medians over `--rounds` rounds:

  1. In process: one `AdmissionGate.admit()` enter+exit with an empty queue, next to a bare
     `asyncio.Semaphore` doing the same job without priorities, bounds or accounting.
  2. Proxy (gate in the path, queue always empty: max_concurrent 1024) vs direct to an instant
     simulator: added latency per sequential non-streamed request.
  3. 64 concurrent clients against a simulator with 4 parallel slots, direct (Ollama's own
     unbounded queue does the waiting) vs through the proxy with `max_concurrent: 4` (the proxy's
     queue does it): requests/s, p50 and p99, refusals. Once with an instant simulator (the
     hand-off cost) and once with a slow one (time_scale > 0, the realistic case).

Simulator and proxy run as separate processes, as in `proxy_overhead.py`, whose helpers it reuses.

Usage: python bench/admission.py [--rounds 5] [--requests 400] [--slow-scale 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
from proxy_overhead import free_port, percentile, sequential, wait_ready

from ollama_proxy.config.schema import QueueConfig
from ollama_proxy.core.admission import Priority
from ollama_proxy.service.admission import AdmissionGate

BODY = json.dumps({"model": "llama3.2", "prompt": "Hi", "stream": False, "options": {"num_predict": 8}}).encode()


async def gate_cost_us(ops: int) -> tuple[float, float]:
    gate = AdmissionGate.from_config("bench", 4, QueueConfig())
    semaphore = asyncio.Semaphore(4)
    start = time.perf_counter()
    for _ in range(ops):
        async with gate.admit(Priority.NORMAL):
            pass
    gated = (time.perf_counter() - start) / ops * 1e6
    start = time.perf_counter()
    for _ in range(ops):
        async with semaphore:
            pass
    return gated, (time.perf_counter() - start) / ops * 1e6


async def burst(session: aiohttp.ClientSession, url: str, total: int, clients: int) -> dict[str, float]:
    """`clients` workers share `total` requests; returns rps, p50/p99 seconds and refusals."""
    remaining = total
    times: list[float] = []
    refused = 0

    async def worker() -> None:
        nonlocal remaining, refused
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            async with session.post(url, data=BODY) as r:
                await r.read()
                if r.status != 200:
                    refused += 1
            times.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    return {"rps": total / elapsed, "p50": statistics.median(times), "p99": percentile(times, 0.99),
            "refused": float(refused)}


@contextmanager
def processes(time_scale: float, max_concurrent: int) -> Iterator[tuple[str, str]]:
    """A simulator (4 parallel slots) and the proxy in front of it; yields (direct, proxied) URLs."""
    sim_port, proxy_port = free_port(), free_port()
    config = Path(tempfile.mkdtemp()) / "proxy.yaml"
    config.write_text(json.dumps({
        "server": {"http_port": proxy_port}, "log_level": "WARNING",
        "router": {"queue": {"max_length": 1024}},
        "backends": [{"id": "sim", "endpoint": f"http://127.0.0.1:{sim_port}",
                      "characteristics": {"max_concurrent": max_concurrent}}]}))
    sim = subprocess.Popen([sys.executable, "-m", "ollama_proxy", "simulate", "--port", str(sim_port),
                            "--models", "llama3.2", "--profile", "nvidia", "--num-parallel", "4",
                            "--time-scale", str(time_scale), "--reply-tokens", "8,8"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = subprocess.Popen([sys.executable, "-m", "ollama_proxy", "--config", str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{proxy_port}"
    finally:
        for process in (proxy, sim):
            process.terminate()
            process.wait(timeout=10)


async def run(args: argparse.Namespace) -> None:
    gated, bare = zip(*[await gate_cost_us(20000) for _ in range(args.rounds)], strict=True)
    print("1. in process, empty queue, per enter+exit")
    print(f"   AdmissionGate.admit      {statistics.median(gated):8.2f} us")
    print(f"   asyncio.Semaphore        {statistics.median(bare):8.2f} us")

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        with processes(0.0, 1024) as (direct, proxied):
            await wait_ready(direct + "/api/version")
            await wait_ready(proxied + "/health")
            for base in (direct, proxied):  # warm the path and load the model
                await sequential(session, base + "/api/generate", BODY, 50)
            medians: dict[str, list[float]] = {"direct": [], "proxy": []}
            for _ in range(args.rounds):
                for name, base in (("direct", direct), ("proxy", proxied)):
                    medians[name].append(statistics.median(
                        await sequential(session, base + "/api/generate", BODY, args.requests)))
            direct_us = statistics.median(medians["direct"]) * 1e6
            proxy_us = statistics.median(medians["proxy"]) * 1e6
            print("2. sequential, instant simulator, proxy queue always empty (p50 per request)")
            print(f"   direct {direct_us:8.1f} us   proxy {proxy_us:8.1f} us   added {proxy_us - direct_us:8.1f} us")

        print(f"3. concurrency 64, simulator with 4 slots, proxy max_concurrent 4 ({args.requests} requests/round)")
        for label, scale, total in (("instant", 0.0, args.requests), (f"slow x{args.slow_scale:g}", args.slow_scale,
                                                                       args.requests // 2)):
            with processes(scale, 4) as (direct, proxied):
                await wait_ready(direct + "/api/version")
                await wait_ready(proxied + "/health")
                for base in (direct, proxied):
                    await sequential(session, base + "/api/generate", BODY, 10)
                rounds: dict[str, list[dict[str, float]]] = {"direct": [], "proxy": []}
                for _ in range(args.rounds):
                    for name, base in (("direct", direct), ("proxy", proxied)):
                        rounds[name].append(await burst(session, base + "/api/generate", total, 64))
                for name, results in rounds.items():
                    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
                    print(f"   {label:<11} {name:<6} {med['rps']:8.0f} req/s   p50 {med['p50'] * 1e3:8.1f} ms   "
                          f"p99 {med['p99'] * 1e3:8.1f} ms   refused {med['refused']:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--slow-scale", type=float, default=0.05)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
