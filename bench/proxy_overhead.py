"""What the proxy adds: direct-to-simulator vs through-the-proxy, measured in the same run.

Not a test. Starts one simulator (instant profile) and the proxy as separate processes, then
alternates direct and proxied rounds so both see the same machine state, and reports medians:

  - added p50/p99 latency per non-streamed request (sequential, keep-alive)
  - requests/s at concurrency 32, both ways
  - added time to first byte and added time per chunk on a streamed generate
  - proxy CPU time per request
  - with `wrk` installed (Debian package `wrk`), the same latency and throughput from a C load
    generator, which does not compete with the servers for the two cores the way a Python client does

Usage: python bench/proxy_overhead.py [--rounds 5] [--requests 400] [--route auto|passthrough]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sequential(session: aiohttp.ClientSession, url: str, body: bytes, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        async with session.post(url, data=body) as r:
            await r.read()
            assert r.status == 200, r.status
        times.append(time.perf_counter() - start)
    return times


async def concurrent(session: aiohttp.ClientSession, url: str, body: bytes, n: int, workers: int) -> float:
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.post(url, data=body) as r:
                await r.read()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return n / (time.perf_counter() - start)


async def streamed(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[float, float, int]:
    start = time.perf_counter()
    first = None
    chunks = 0
    async with session.post(url, data=body) as r:
        async for _ in r.content:
            chunks += 1
            if first is None:
                first = time.perf_counter() - start
    return first or 0.0, time.perf_counter() - start, chunks


_WRK_LATENCY = re.compile(r"^\s*(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_UNIT = {"us": 1.0, "ms": 1e3, "s": 1e6}


async def wrk(url: str, script: Path, *, connections: int, seconds: int) -> dict[str, float]:
    """p50/p99 (µs) and requests/s from wrk: a C load generator that leaves the cores to the servers."""
    proc = await asyncio.create_subprocess_exec(
        "wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
        url, stdout=subprocess.PIPE)
    out = (await proc.communicate())[0].decode()
    figures = {f"p{q}": float(v) * _UNIT[unit] for q, v, unit in _WRK_LATENCY.findall(out)}
    figures["rps"] = float(_WRK_RPS.search(out).group(1))  # type: ignore[union-attr]
    return figures


async def run(args: argparse.Namespace) -> dict[str, float]:
    sim_port, proxy_port = free_port(), free_port()
    tmp = Path(tempfile.mkdtemp())
    config = tmp / "proxy.yaml"
    config.write_text(json.dumps({
        "server": {"http_port": proxy_port}, "log_level": "WARNING",
        "context": {"default_route": args.route},
        # The admission limit is lifted: this measures the proxy's cost, not its queueing policy.
        "backends": [{"id": "sim", "endpoint": f"http://127.0.0.1:{sim_port}",
                      "characteristics": {"max_concurrent": 1024}}]}))
    sim = subprocess.Popen([sys.executable, "-m", "ollama_proxy", "simulate", "--port", str(sim_port),
                            "--models", "llama3.2", "--time-scale", "0",
                            "--reply-tokens", f"{args.chunks},{args.chunks}"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    proxy = subprocess.Popen([sys.executable, "-m", "ollama_proxy", "--config", str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    plain_port = free_port()
    plain = subprocess.Popen([sys.executable, str(Path(__file__).with_name("plain_passthrough.py")), str(plain_port),
                              f"http://127.0.0.1:{sim_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        direct = f"http://127.0.0.1:{sim_port}"
        proxied = f"http://127.0.0.1:{proxy_port}"
        baseline = f"http://127.0.0.1:{plain_port}"
        await wait_ready(direct + "/api/version")
        await wait_ready(proxied + "/health")
        await wait_ready(baseline + "/api/version")
        small = json.dumps({"model": "llama3.2", "prompt": "Hi", "stream": False,
                            "options": {"num_predict": 1}}).encode()
        stream = json.dumps({"model": "llama3.2", "prompt": "Tell a story", "stream": True,
                             "options": {"num_predict": args.chunks}}).encode()
        results: dict[str, list[float]] = {f"{who}_{what}": [] for who in ("direct", "proxy", "plain")
                                           for what in ("p50", "p99", "rps", "ttfb", "stream")}
        results["cpu_per_request"] = []
        results["plain_cpu_per_request"] = []
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            for base in (direct, proxied, baseline):  # warm every path and the model
                await sequential(session, base + "/api/generate", small, 50)
            chunks = 0
            cpu_watch = {"proxy": (proxy, "cpu_per_request"), "plain": (plain, "plain_cpu_per_request")}
            for _ in range(args.rounds):
                for name, base in (("direct", direct), ("proxy", proxied), ("plain", baseline)):
                    measured = cpu_watch.get(name)
                    cpu_before = cpu_seconds(measured[0].pid) if measured else 0.0
                    times = await sequential(session, base + "/api/generate", small, args.requests)
                    if measured:
                        results[measured[1]].append((cpu_seconds(measured[0].pid) - cpu_before) / args.requests)
                    results[f"{name}_p50"].append(statistics.median(times))
                    results[f"{name}_p99"].append(percentile(times, 0.99))
                    results[f"{name}_rps"].append(
                        await concurrent(session, base + "/api/generate", small, args.requests, 32))
                    ttfb, total, chunks = zip(*[await streamed(session, base + "/api/generate", stream)
                                                for _ in range(5)], strict=True)
                    results[f"{name}_ttfb"].append(statistics.median(ttfb))
                    results[f"{name}_stream"].append(statistics.median(total))
                    chunks = chunks[0]
            if shutil.which("wrk"):
                script = tmp / "post.lua"
                script.write_text(f"wrk.method = 'POST'\nwrk.body = [[{small.decode()}]]\n"
                                  "wrk.headers['Content-Type'] = 'application/json'\n")
                for who in ("direct", "proxy", "plain"):
                    results.update({f"wrk_{who}_{k}": [] for k in ("p50", "p99", "rps")})
                for _ in range(args.rounds):
                    for name, base in (("direct", direct), ("proxy", proxied), ("plain", baseline)):
                        one = await wrk(base + "/api/generate", script, connections=1, seconds=3)
                        results[f"wrk_{name}_p50"].append(one["p50"])
                        results[f"wrk_{name}_p99"].append(one["p99"])
                        many = await wrk(base + "/api/generate", script, connections=32, seconds=3)
                        results[f"wrk_{name}_rps"].append(many["rps"])
        med = {k: statistics.median(v) for k, v in results.items()}
        wrk_figures = {} if "wrk_direct_p50" not in med else {
            "wrk_direct_p50_us": med["wrk_direct_p50"],
            "wrk_added_p50_us": med["wrk_proxy_p50"] - med["wrk_direct_p50"],
            "wrk_added_p99_us": med["wrk_proxy_p99"] - med["wrk_direct_p99"],
            "wrk_plain_aiohttp_added_p50_us": med["wrk_plain_p50"] - med["wrk_direct_p50"],
            "wrk_direct_rps_c32": med["wrk_direct_rps"],
            "wrk_proxy_rps_c32": med["wrk_proxy_rps"],
            "wrk_plain_aiohttp_rps_c32": med["wrk_plain_rps"],
        }
        return wrk_figures | {
            "added_p50_us": (med["proxy_p50"] - med["direct_p50"]) * 1e6,
            "added_p99_us": (med["proxy_p99"] - med["direct_p99"]) * 1e6,
            "direct_p50_us": med["direct_p50"] * 1e6,
            "proxy_p50_us": med["proxy_p50"] * 1e6,
            "plain_aiohttp_added_p50_us": (med["plain_p50"] - med["direct_p50"]) * 1e6,
            "direct_rps_c32": med["direct_rps"],
            "proxy_rps_c32": med["proxy_rps"],
            "plain_aiohttp_rps_c32": med["plain_rps"],
            "added_ttfb_us": (med["proxy_ttfb"] - med["direct_ttfb"]) * 1e6,
            "added_per_chunk_us": (med["proxy_stream"] - med["direct_stream"]) * 1e6 / max(1, chunks),
            "plain_aiohttp_added_per_chunk_us": (med["plain_stream"] - med["direct_stream"]) * 1e6 / max(1, chunks),
            "stream_chunks": float(chunks),
            "proxy_cpu_per_request_us": med["cpu_per_request"] * 1e6,
            "plain_aiohttp_cpu_per_request_us": med["plain_cpu_per_request"] * 1e6,
        }
    finally:
        for process in (proxy, plain, sim):
            process.terminate()
            process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--route", choices=("passthrough", "auto"), default="passthrough")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    width = max(map(len, figures))
    print(f"route={args.route} rounds={args.rounds} requests/round={args.requests}")
    for key, value in figures.items():
        print(f"{key:<{width}}  {value:10.1f}")


if __name__ == "__main__":
    main()
