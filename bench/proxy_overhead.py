"""What the proxy adds: direct-to-simulator vs through-the-proxy, measured in the same run.

Not a test. Runs one simulator in this process (instant: time_scale 0), starts nginx (as
bench/instructions.py configures it), a plain aiohttp passthrough, with `--systems relay` a bare uvloop byte
relay (`byte_relay.py`: the floor of any Python process in the path), and one proxy per `server.engine`
(aiohttp, fast) as separate processes, then measures each in turn every round so all see the same machine
state, and reports medians:

  - added p50/p99 latency per non-streamed request (sequential, keep-alive)
  - requests/s at concurrency 32, both ways
  - added time to first byte and added time per chunk on an unpaced streamed generate (relay throughput)
  - added per-chunk transit on a paced stream (`--chunk-gap-ms` between chunks): each line's arrival
    time less the `created_at` the simulator stamped when it wrote the line, median over the lines
  - CPU time per request of each relay process (the proxies, nginx, the plain passthrough, the byte relay), from
    /proc/PID/task/*/schedstat (nanoseconds, every thread)
  - with `wrk` installed (Debian package `wrk`), the same latency and throughput from a C load
    generator, which does not compete with the servers for the two cores the way a Python client does

Usage: python bench/proxy_overhead.py [--rounds 5] [--requests 400] [--route auto|passthrough] [--backends 2]
                                     [--chunk-gap-ms 10] [--paced-chunks 50]
                                     [--engines aiohttp,fast] [--upstream-client raw|aiohttp]
                                     [--systems nginx,plain,relay]
                                     [--baseline-src PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp

from ollama_proxy.sim import SimConfig, SimServer


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
    """CPU time of every thread of `pid` (schedstat: nanoseconds, where /proc/PID/stat counts 10 ms ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


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


async def transit(session: aiohttp.ClientSession, url: str, body: bytes) -> list[float]:
    """Per line of a paced stream: arrival (wall clock) less the simulator's `created_at` for it."""
    out = []
    async with session.post(url, data=body) as r:
        async for line in r.content:
            arrived = time.time()
            if line.strip():
                stamp = json.loads(line)["created_at"]
                out.append(arrived - datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    return out


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


@dataclass
class System:
    """One way to reach the simulator: directly, or through a relay process whose CPU time is read."""

    name: str
    url: str
    ready_path: str
    process: subprocess.Popen[bytes] | None = None


def start_systems(args: argparse.Namespace, tmp: Path, sim_port: int) -> list[System]:
    direct = f"http://127.0.0.1:{sim_port}"
    systems = [System("direct", direct, "/api/version")]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if "nginx" in args.systems and Path(nginx).exists():
        from instructions import nginx_config  # imported here: instructions.py imports this module

        port = free_port()
        prefix = tmp / "nginx"
        prefix.mkdir()
        conf = nginx_config(prefix, port, sim_port)
        systems.append(System("nginx", f"http://127.0.0.1:{port}", "/api/version", subprocess.Popen(
            [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"),
             "-g", "daemon off; master_process off;"], **quiet)))  # type: ignore[call-overload]
    if "relay" in args.systems:
        port = free_port()
        systems.append(System("byte relay", f"http://127.0.0.1:{port}", "/api/version", subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("byte_relay.py")), str(port), str(sim_port)], **quiet)))
    if "plain" in args.systems:
        port = free_port()
        systems.append(System("plain aiohttp", f"http://127.0.0.1:{port}", "/api/version", subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("plain_passthrough.py")), str(port), direct], **quiet)))
    proxies = [(f"proxy {engine}", engine, None) for engine in args.engines]
    if args.baseline_src:
        proxies.append(("proxy fast @base", "fast", args.baseline_src))
    for name, engine, src in proxies:
        port = free_port()
        config = tmp / f"{name.replace(' ', '-')}.yaml"  # JSON is YAML
        server = {"http_port": port, "engine": engine,
                  **({"upstream_client": args.upstream_client} if args.upstream_client else {})}
        config.write_text(json.dumps({
            "server": server, "log_level": "WARNING", "context": {"default_route": args.route},
            # The admission limit is lifted: this measures the proxy's cost, not its queueing policy. With
            # --backends 2 the router chooses between two backends (both the one simulator) per request.
            "backends": [{"id": f"sim{i}", "endpoint": direct, "characteristics": {"max_concurrent": 1024}}
                         for i in range(args.backends)]}))
        env = None
        if src is not None:
            from instructions import python_env  # imported here, as nginx_config above

            env = python_env(src)
        systems.append(System(name, f"http://127.0.0.1:{port}", "/health", subprocess.Popen(
            [sys.executable, "-m", "ollama_proxy", "--config", str(config)], env=env, **quiet)))
    return systems


async def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """The medians over rounds of each figure, per system; every round measures every system in turn."""
    tmp = Path(tempfile.mkdtemp())
    # In this process, so that its pace can be set for the paced-stream window alone (as bench/instructions.py).
    async with SimServer(SimConfig(models=["llama3.2"], time_scale=0, reply_tokens=(args.chunks,) * 2)) as sim:
        return await measure_all(args, tmp, sim)


async def measure_all(args: argparse.Namespace, tmp: Path, sim: SimServer) -> dict[str, dict[str, float]]:
    systems = start_systems(args, tmp, sim.port)
    try:
        for system in systems:
            await wait_ready(system.url + system.ready_path)
        small = json.dumps({"model": "llama3.2", "prompt": "Hi", "stream": False,
                            "options": {"num_predict": 1}}).encode()
        stream = json.dumps({"model": "llama3.2", "prompt": "Tell a story", "stream": True,
                             "options": {"num_predict": args.chunks}}).encode()
        paced = json.dumps({"model": "llama3.2", "prompt": "Tell a story", "stream": True,
                            "options": {"num_predict": args.paced_chunks}}).encode()
        pace = args.chunk_gap_ms / 1000 * sim.state.config.hardware.tokens_per_s
        results: dict[str, dict[str, list[float]]] = {s.name: {} for s in systems}

        def note(system: System, what: str, value: float) -> None:
            results[system.name].setdefault(what, []).append(value)

        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            for system in systems:  # warm every path and the model
                await sequential(session, system.url + "/api/generate", small, 50)
            for _ in range(args.rounds):
                for system in systems:
                    url = system.url + "/api/generate"
                    cpu_before = cpu_seconds(system.process.pid) if system.process else 0.0
                    times = await sequential(session, url, small, args.requests)
                    if system.process:
                        note(system, "cpu_us", (cpu_seconds(system.process.pid) - cpu_before) / args.requests * 1e6)
                    note(system, "p50_us", statistics.median(times) * 1e6)
                    note(system, "p99_us", percentile(times, 0.99) * 1e6)
                    note(system, "rps_c32", await concurrent(session, url, small, args.requests, 32))
                    ttfb, total, chunks = zip(*[await streamed(session, url, stream) for _ in range(5)], strict=True)
                    note(system, "ttfb_us", statistics.median(ttfb) * 1e6)
                    note(system, "per_chunk_us", statistics.median(total) * 1e6 / max(1, chunks[0]))
                    sim.state.config.time_scale = pace
                    try:
                        note(system, "transit_us", statistics.median(await transit(session, url, paced)) * 1e6)
                    finally:
                        sim.state.config.time_scale = 0.0
            if shutil.which("wrk"):
                script = tmp / "post.lua"
                script.write_text(f"wrk.method = 'POST'\nwrk.body = [[{small.decode()}]]\n"
                                  "wrk.headers['Content-Type'] = 'application/json'\n")
                for _ in range(args.rounds):
                    for system in systems:
                        url = system.url + "/api/generate"
                        one = await wrk(url, script, connections=1, seconds=3)
                        note(system, "wrk_p50_us", one["p50"])
                        note(system, "wrk_p99_us", one["p99"])
                        cpu_before = cpu_seconds(system.process.pid) if system.process else 0.0
                        many = await wrk(url, script, connections=32, seconds=3)
                        note(system, "wrk_rps_c32", many["rps"])
                        if system.process:
                            note(system, "wrk_cpu_us_c32", (cpu_seconds(system.process.pid) - cpu_before)
                                 / (many["rps"] * 3) * 1e6)
        return {name: {k: statistics.median(v) for k, v in figures.items()}
                         for name, figures in results.items()}
    finally:
        for system in systems:
            if system.process is not None:
                system.process.terminate()
                system.process.wait(timeout=10)


def report(medians: dict[str, dict[str, float]]) -> list[str]:
    """Each relay's figures as added to (or in proportion to) the direct connection's."""
    direct = medians["direct"]
    rows = [("p50 added, Python client (µs)", "p50_us", "added"), ("p99 added, Python client (µs)", "p99_us", "added"),
            ("req/s c=32, Python client (x direct)", "rps_c32", "ratio"),
            ("time to first byte added (µs)", "ttfb_us", "added"),
            ("per chunk added, unpaced (µs)", "per_chunk_us", "added"),
            ("per-chunk transit added, paced (µs)", "transit_us", "added"),
            ("CPU per request, sequential (µs)", "cpu_us", "own"),
            ("p50 added, wrk -c1 (µs)", "wrk_p50_us", "added"), ("p99 added, wrk -c1 (µs)", "wrk_p99_us", "added"),
            ("req/s c=32, wrk (x direct)", "wrk_rps_c32", "ratio"),
            ("CPU per request, wrk c=32 (µs)", "wrk_cpu_us_c32", "own")]
    names = list(medians)
    width = max(len(label) for label, _, _ in rows)
    lines = [f"{'':<{width}}  " + "  ".join(f"{n:>14}" for n in names)]
    for label, key, kind in rows:
        if key not in direct and kind != "own":
            continue
        cells = []
        for name in names:
            value = medians[name].get(key)
            if value is None:
                cells.append(f"{'-':>14}")
            elif name == "direct":
                cells.append(f"{'(' + format(value, ',.1f') + ')':>14}")
            elif kind == "added":
                cells.append(f"{value - direct[key]:>+14,.1f}")
            elif kind == "ratio":
                cells.append(f"{value / direct[key]:>13.2f}x")
            else:
                cells.append(f"{value:>14,.1f}")
        lines.append(f"{label:<{width}}  " + "  ".join(cells))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--paced-chunks", type=int, default=50, help="lines of the paced stream")
    parser.add_argument("--chunk-gap-ms", type=float, default=10.0, help="the simulator's pace for the paced stream")
    parser.add_argument("--route", choices=("passthrough", "auto"), default="passthrough")
    parser.add_argument("--backends", type=int, default=1, help="backends the proxy routes between (one simulator)")
    parser.add_argument("--engines", default="aiohttp,fast", type=lambda s: [x.strip() for x in s.split(",") if x],
                        help="one proxy per server.engine listed")
    parser.add_argument("--upstream-client", choices=("raw", "aiohttp"), help="server.upstream_client (default: "
                        "the configured default)")
    parser.add_argument("--baseline-src", help="another checkout's src/ directory: its proxy (fast engine) is "
                        "measured alongside as `proxy fast @base`, a before and after in one run")
    parser.add_argument("--systems", default="nginx,plain", type=lambda s: [x.strip() for x in s.split(",") if x],
                        help="the yardsticks run besides the proxies: nginx, plain (aiohttp passthrough), "
                        "relay (bytes only)")
    args = parser.parse_args()
    medians = asyncio.run(run(args))
    print(f"route={args.route} backends={args.backends} upstream_client={args.upstream_client or 'default'} "
          f"rounds={args.rounds} requests/round={args.requests} (medians over rounds)")
    print("\n".join(report(medians)))


if __name__ == "__main__":
    main()
