"""A bounded soak: many concurrent streams through the proxy, and what they leave behind.

Not a test. Starts one simulator and the proxy in front of it as separate processes on loopback
(so the proxy's memory and descriptors can be read from /proc/PID), then runs `--rounds` rounds of
`--streams` concurrent streamed /api/generate requests, each lasting a few seconds, and reports:

  - errors per round (non-200 status, a stream without its final done line, an error line,
    a broken connection), with the first few messages
  - p50/p99 time to first byte and total time per stream
  - the proxy's peak RSS while the streams are open, less its RSS before the round, per open stream
  - the proxy's CPU time (user + system) per streamed chunk received, over each round
  - the proxy's RSS (VmRSS) and open descriptors before the first round and after the last one
    (after a short settle), and its sockets by kind: client side, upstream (to the simulator,
    kept alive for reuse), listening

The simulator and the proxy are configured not to refuse the load: the simulator serves every
stream in parallel (`--num-parallel`) and the proxy's `characteristics.max_concurrent` and
`router.queue.max_length` are raised to the stream count. Stops by itself (about a minute with
the defaults, 2 cores); exits 1 if any stream failed or client-side sockets were left open.

`--engine` and `--upstream-client` choose the proxy's `server.engine` and `server.upstream_client`.

Usage: python bench/soak.py [--streams 1000] [--rounds 3] [--tokens 30,60] [--time-scale 0.25]
                            [--engine fast|aiohttp] [--upstream-client raw|aiohttp]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{url}: the process exited with {process.returncode}")
            try:
                async with session.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _tcp_table() -> dict[str, tuple[int, int, str]]:
    """socket inode -> (local port, remote port, state) for every loopback TCP socket."""
    table = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            table[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), state)
    return table


def descriptors(pid: int, proxy_port: int, sim_port: int) -> dict[str, int]:
    """Open descriptors of `pid`, and its TCP sockets by kind."""
    kinds: Counter[str] = Counter()
    table = _tcp_table()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        kinds["fds"] += 1
        if not target.startswith("socket:["):
            continue
        inode = target[len("socket:["):-1]
        local, remote, state = table.get(inode, (0, 0, ""))
        if state == "0A":
            kinds["listening"] += 1
        elif local == proxy_port:
            kinds["client_sockets"] += 1
        elif remote == sim_port:
            kinds["upstream_sockets"] += 1
        else:
            kinds["other_sockets"] += 1
    return {k: kinds.get(k, 0) for k in ("fds", "client_sockets", "upstream_sockets", "listening", "other_sockets")}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Round:
    ttfb: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    peak_fds: int = 0
    peak_client_sockets: int = 0
    peak_rss_mib: float = 0.0
    rss_after_mib: float = 0.0
    chunks: int = 0
    cpu_s: float = 0.0

    def fail(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{kind}: {detail[:200]}")


async def one_stream(session: aiohttp.ClientSession, url: str, body: bytes, result: Round) -> None:
    start = time.perf_counter()
    first: float | None = None
    last = b""
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
            if r.status != 200:
                result.fail(f"status {r.status}", (await r.read()).decode(errors="replace"))
                return
            async for line in r.content:
                if first is None:
                    first = time.perf_counter() - start
                if line.strip():
                    last = line
                    result.chunks += 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        result.fail(type(exc).__name__, str(exc))
        return
    total = time.perf_counter() - start
    try:
        final = json.loads(last)
    except ValueError:
        result.fail("unparseable last line", last.decode(errors="replace"))
        return
    if "error" in final:
        result.fail("error line", str(final["error"]))
    elif final.get("done") is not True:
        result.fail("no done line", last.decode(errors="replace"))
    else:
        result.ttfb.append(first or total)
        result.total.append(total)


async def watch(pid: int, proxy_port: int, sim_port: int, result: Round, stop: asyncio.Event) -> None:
    while not stop.is_set():
        now = descriptors(pid, proxy_port, sim_port)
        result.peak_fds = max(result.peak_fds, now["fds"])
        result.peak_client_sockets = max(result.peak_client_sockets, now["client_sockets"])
        result.peak_rss_mib = max(result.peak_rss_mib, rss_mib(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


async def run(args: argparse.Namespace) -> int:
    sim_port, proxy_port = free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    config = tmp / "proxy.yaml"
    config.write_text(json.dumps({
        "server": {"http_port": proxy_port, "max_connections": max(2048, 2 * args.streams + 64),
                   **({"engine": args.engine} if args.engine else {}),
                   **({"upstream_client": args.upstream_client} if args.upstream_client else {})},
        "log_level": "WARNING",
        "router": {"queue": {"max_length": args.streams, "max_wait_ms": 600_000}},
        "backends": [{"id": "sim", "endpoint": f"http://127.0.0.1:{sim_port}",
                      "characteristics": {"max_concurrent": min(1024, args.streams)}}]}))
    sim_log = (tmp / "sim.log").open("wb")
    proxy_log = (tmp / "proxy.log").open("wb")
    sim = subprocess.Popen([sys.executable, "-m", "ollama_proxy", "simulate", "--port", str(sim_port),
                            "--models", "llama3.2", "--time-scale", str(args.time_scale), "--profile", "cpu",
                            "--reply-tokens", args.tokens, "--num-parallel", str(args.streams),
                            "--max-queue", str(2 * args.streams)], stdout=sim_log, stderr=subprocess.STDOUT)
    proxy = subprocess.Popen([sys.executable, "-m", "ollama_proxy", "--config", str(config)],
                             stdout=proxy_log, stderr=subprocess.STDOUT)
    rounds: list[Round] = []
    try:
        await wait_ready(f"http://127.0.0.1:{sim_port}/api/version", sim)
        await wait_ready(f"http://127.0.0.1:{proxy_port}/health", proxy)
        url = f"http://127.0.0.1:{proxy_port}/api/generate"
        body = json.dumps({"model": "llama3.2", "prompt": "Tell me a story", "stream": True}).encode()
        warm_up = json.dumps({"model": "llama3.2", "prompt": "hi", "stream": False, "options": {"num_predict": 1}})
        # Load the model first, so that the rounds measure streams, not a load.
        async with aiohttp.ClientSession() as warm, warm.post(url, data=warm_up.encode()) as r:
            await r.read()
        await asyncio.sleep(1.0)
        rss_before = rss_mib(proxy.pid)
        fds_before = descriptors(proxy.pid, proxy_port, sim_port)
        for _ in range(args.rounds):
            result = Round()
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch(proxy.pid, proxy_port, sim_port, result, stop))
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=args.timeout)
            started = time.perf_counter()
            cpu_before = cpu_seconds(proxy.pid)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                await asyncio.gather(*(one_stream(session, url, body, result) for _ in range(args.streams)))
            result.wall_s = time.perf_counter() - started
            result.cpu_s = cpu_seconds(proxy.pid) - cpu_before
            stop.set()
            await watcher
            result.rss_after_mib = rss_mib(proxy.pid)
            rounds.append(result)
        await asyncio.sleep(args.settle)
        rss_after = rss_mib(proxy.pid)
        fds_after = descriptors(proxy.pid, proxy_port, sim_port)
    finally:
        for process in (proxy, sim):
            process.terminate()
        for process in (proxy, sim):
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        sim_log.close()
        proxy_log.close()

    ms = 1000.0
    print(f"soak: {args.rounds} round(s) x {args.streams} concurrent streams, tokens {args.tokens}, "
          f"time_scale {args.time_scale}, engine {args.engine or 'default'}, "
          f"upstream client {args.upstream_client or 'default'}")
    print(f"{'round':>5} {'ok':>6} {'errors':>6} {'ttfb p50':>9} {'ttfb p99':>9} {'total p50':>10} "
          f"{'total p99':>10} {'wall s':>7} {'peak fds':>9} {'peak clients':>12} {'RSS MiB':>8} "
          f"{'KiB/stream':>10} {'CPU µs/chunk':>12}")
    for i, r in enumerate(rounds, 1):
        print(f"{i:>5} {len(r.total):>6} {sum(r.errors.values()):>6} {percentile(r.ttfb, .5) * ms:>7.0f}ms "
              f"{percentile(r.ttfb, .99) * ms:>7.0f}ms {percentile(r.total, .5) * ms:>8.0f}ms "
              f"{percentile(r.total, .99) * ms:>8.0f}ms {r.wall_s:>7.1f} {r.peak_fds:>9} {r.peak_client_sockets:>12} "
              f"{r.rss_after_mib:>8.1f} {(r.peak_rss_mib - rss_before) * 1024 / args.streams:>10.1f} "
              f"{r.cpu_s / max(1, r.chunks) * 1e6:>12.1f}")
    all_ttfb = [t for r in rounds for t in r.ttfb]
    all_total = [t for r in rounds for t in r.total]
    errors: Counter[str] = Counter()
    for r in rounds:
        errors.update(r.errors)
    print(f"{'all':>5} {len(all_total):>6} {sum(errors.values()):>6} {percentile(all_ttfb, .5) * ms:>7.0f}ms "
          f"{percentile(all_ttfb, .99) * ms:>7.0f}ms {percentile(all_total, .5) * ms:>8.0f}ms "
          f"{percentile(all_total, .99) * ms:>8.0f}ms")
    if all_total:
        print(f"mean total {statistics.fmean(all_total) * ms:.0f}ms")
    print()
    print(f"{'proxy':<22} {'before':>8} {'after':>8}")
    print(f"{'RSS (MiB)':<22} {rss_before:>8.1f} {rss_after:>8.1f}")
    for key in fds_before:
        print(f"{key:<22} {fds_before[key]:>8} {fds_after[key]:>8}")
    print(f"(after a {args.settle:g} s settle; upstream sockets are the proxy's keep-alive pool to the simulator)")
    if errors:
        print("\nerrors: " + ", ".join(f"{kind} x{n}" for kind, n in errors.most_common()))
        for r in rounds:
            for line in r.examples:
                print("  " + line)
    leaked = fds_after["client_sockets"]
    if leaked:
        print(f"\n{leaked} client-side socket(s) still open in the proxy after every client closed")
    print(f"\nlogs: {tmp}")
    return 1 if errors or leaked else 0


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed if hard == resource.RLIM_INFINITY else min(needed, hard),
                                                    hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < needed:
        print(f"warning: open-file limit {soft} is below the {needed} this run needs", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", default="30,60", help="MIN,MAX tokens per reply (the simulator's --reply-tokens)")
    parser.add_argument("--time-scale", type=float, default=0.25,
                        help="the simulator's time scale; cpu profile, 8 tokens/s at 1.0")
    parser.add_argument("--timeout", type=float, default=120.0, help="per-stream client timeout, seconds")
    parser.add_argument("--engine", choices=("fast", "aiohttp"), help="server.engine (default: the proxy's)")
    parser.add_argument("--upstream-client", choices=("raw", "aiohttp"),
                        help="server.upstream_client (default: the proxy's)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to wait before the final readings")
    args = parser.parse_args()
    # Each stream is a client socket here and in the proxy, and an upstream socket in the proxy and the simulator.
    raise_fd_limit(2 * args.streams + 256)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
