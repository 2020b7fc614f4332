"""Deterministic per-request costs: callgrind instruction counts for the proxy, a plain aiohttp relay and nginx.

Not a test. Wall-clock figures on a shared machine move by tens of percent between runs; counts of
executed user-space instructions do not. Each system under test runs under
`valgrind --tool=callgrind --instr-atstart=no` (start-up and warm-up run uninstrumented, so fast);
instrumentation is then switched on with `callgrind_control -i on`, and every measured window is
`callgrind_control -z` (zero), the load, `callgrind_control -d` (dump), read as the dump's `totals:` (Ir).

  - instructions per request: N sequential non-streamed `POST /api/generate` (keep-alive, from this
    process, outside valgrind), minus an idle window of the same wall time (health probes, polls), / N
  - instructions per chunk: `--streams` streamed generates of `--chunks` tokens, minus an idle window of
    their wall time and one non-streamed request per stream, / lines received. The backend paces these
    streams (`--chunk-gap-ms`) so that chunks do not arrive bunched at the much slower process under valgrind.

The proxy's periodic health probe, model discovery and sysfs poll are set to once an hour (they run at
start-up as usual): they are not per-request work, and one probe more or less in a window is noise
(`--keep-timers` keeps the 5-15 s defaults; the idle window then takes them out on average).

The backend is the simulator (`ollama_proxy.sim`, instant: time_scale 0), run in this process; its
time scale is raised only for the streamed window. Systems: the proxy (`python -m ollama_proxy` with
`--backends` backends, all the one simulator, so that with 2 the router chooses per request;
`--route auto` sets `context.default_route: auto`, so every request is sized; `--src` puts another
checkout's `src/` first on its PYTHONPATH; measured once per `server.engine` in `--engines` and per
`server.upstream_client` in `--upstream-clients`), `bench/plain_passthrough.py`, and nginx when installed
(1 process, `proxy_buffering off`, keep-alive upstream, no access log). Everything listens on 127.0.0.1 only.

Usage: python bench/instructions.py [--requests 300] [--route passthrough|auto] [--backends 1] [--src PATH]
                                    [--engines fast,aiohttp] [--upstream-clients raw,aiohttp]
                                    [--chunks 200] [--streams 3] [--systems proxy,plain,nginx]
                                    [--log-level INFO] [--keep-timers]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from proxy_overhead import free_port, sequential, streamed, wait_ready

from ollama_proxy.sim import SimConfig, SimServer

HERE = Path(__file__).resolve().parent
MODEL = "llama3.2"
_TOTALS = re.compile(rb"^totals:\s+(\d+)", re.MULTILINE)


def _die_with_parent() -> None:
    """Runs in the child before exec: if this benchmark dies abruptly, the kernel kills what it started."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Result:
    system: str
    per_request: float
    per_chunk: float | None
    chunks: int
    idle_per_s: float
    seconds_per_request: float


class Callgrind:
    """One process under callgrind, driven with callgrind_control; each dump's Ir total read back."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True)
        self.out = self.dir / "callgrind.out"
        self.dumps = 0
        log = (self.dir / "valgrind.log").open("wb")
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--trace-children=no", "--instr-atstart=no",
             f"--callgrind-out-file={self.out}", f"--log-file={self.dir / 'valgrind.txt'}", *argv],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
            env=env, start_new_session=True, preexec_fn=_die_with_parent)
        log.close()

    async def control(self, *flags: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            "callgrind_control", *flags, str(self.proc.pid), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = (await asyncio.wait_for(proc.communicate(), 60))[0].decode(errors="replace")
        if proc.returncode != 0 or "OK" not in out:
            raise RuntimeError(f"callgrind_control {' '.join(flags)} for {self.name} failed: {out.strip()}")

    async def zero(self) -> float:
        await self.control("-z")
        return time.perf_counter()

    async def dump(self) -> int:
        """Dump the counters (callgrind zeroes them after a dump) and return the Ir since the last zero."""
        await self.control("-d")
        self.dumps += 1
        path = self.out.with_name(f"{self.out.name}.{self.dumps}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                found = _TOTALS.search(path.read_bytes())
                if found:
                    path.unlink()
                    return int(found.group(1))
            await asyncio.sleep(0.05)
        raise RuntimeError(f"no callgrind dump {path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log_tail(self) -> str:
        text = ""
        for name in ("valgrind.log", "valgrind.txt"):
            with contextlib.suppress(OSError):
                text += (self.dir / name).read_text(errors="replace")[-1500:]
        return text


def nginx_config(directory: Path, port: int, upstream_port: int) -> Path:
    conf = directory / "nginx.conf"
    conf.write_text(f"""\
worker_processes 1;
error_log {directory}/error.log warn;
pid {directory}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    upstream sim {{ server 127.0.0.1:{upstream_port}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
""")
    return conf


async def wait_up(target: Callgrind, url: str, timeout_s: float) -> None:
    """`wait_ready`, but fail at once when the process under valgrind has exited."""
    deadline = time.monotonic() + timeout_s
    while True:
        if target.proc.poll() is not None:
            raise RuntimeError(f"{target.name} exited with status {target.proc.returncode}")
        try:
            return await wait_ready(url, timeout_s=2.0)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise


def python_env(src: str | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict and set layouts in every run
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(Path(src).resolve()), env.get("PYTHONPATH"))))
    return env


def proxy_origin(env: dict[str, str]) -> str:
    """Where the proxy subprocess imports ollama_proxy from (to show which checkout is measured)."""
    out = subprocess.run([sys.executable, "-c", "import ollama_proxy; print(ollama_proxy.__file__)"],
                         env=env, capture_output=True, text=True, check=True, cwd="/")
    return str(Path(out.stdout.strip()).parent.parent)


async def measure(target: Callgrind, session: aiohttp.ClientSession, url: str, sim: SimServer,
                  args: argparse.Namespace) -> Result:
    small = json.dumps({"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 1}}).encode()
    story = json.dumps({"model": MODEL, "prompt": "Tell a story", "stream": True,
                        "options": {"num_predict": args.chunks}}).encode()
    await sequential(session, url, small, args.warmup)  # uninstrumented: caches, pools, lazy set-up
    await streamed(session, url, story)
    await target.control("-i", "on")
    await sequential(session, url, small, 10)
    await streamed(session, url, story)

    start = await target.zero()
    await sequential(session, url, small, args.requests)
    wall = time.perf_counter() - start
    busy = await target.dump()
    start = await target.zero()
    await asyncio.sleep(wall)
    idle = await target.dump()
    idle_per_s = idle / (time.perf_counter() - start)
    per_request = (busy - idle) / args.requests

    per_chunk, chunks = None, 0
    if args.chunks:
        sim.state.config.time_scale = args.chunk_gap_ms / 1000 * sim.state.config.hardware.tokens_per_s
        try:
            start = await target.zero()
            for _ in range(args.streams):
                chunks += (await streamed(session, url, story))[2]
            stream_wall = time.perf_counter() - start
            stream = await target.dump()
        finally:
            sim.state.config.time_scale = 0.0
        start = await target.zero()
        await asyncio.sleep(stream_wall)
        stream_idle = await target.dump()
        per_chunk = (stream - stream_idle - args.streams * per_request) / max(1, chunks)
    return Result(target.name, per_request, per_chunk, chunks, idle_per_s, wall / args.requests)


async def run(args: argparse.Namespace) -> list[Result]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-instructions-"))
    results: list[Result] = []
    started: list[Callgrind] = []
    sim_config = SimConfig(models=[MODEL], time_scale=0, reply_tokens=(max(1, args.chunks),) * 2)
    try:
        async with SimServer(sim_config) as sim:
            for system in args.systems:
                port = free_port()
                # The health probe, model discovery and sysfs poll (every 5-15 s) move out of the windows:
                # not per-request work, and a probe more or less in a window would be noise.
                timers_off = {"router": {"health_interval_s": 3600, "discovery_interval_s": 3600},
                              "system": {"poll_interval_s": 3600}}
                if system.startswith("proxy"):
                    _, engine, client = system.split(":")
                    env = python_env(args.src)
                    print(f"proxy: ollama_proxy from {proxy_origin(env)}, route {args.route}, "
                          f"{args.backends} backend(s), engine {engine or 'default'}, "
                          f"upstream client {client or 'default'}", flush=True)
                    name = f"proxy {engine or 'default'} {client or 'default'}"
                    config = workdir / f"{name.replace(' ', '-')}.yaml"  # JSON is YAML
                    server = {"host": "127.0.0.1", "http_port": port, **({"engine": engine} if engine else {}),
                              **({"upstream_client": client} if client else {})}
                    config.write_text(json.dumps({
                        "server": server, "log_level": args.log_level, "context": {"default_route": args.route},
                        **({} if args.keep_timers else timers_off),
                        # The admission limit is lifted, as in proxy_overhead.py (irrelevant for one client).
                        "backends": [{"id": f"sim{i}", "endpoint": sim.url,
                                      "characteristics": {"max_concurrent": 1024}} for i in range(args.backends)]}))
                    target = Callgrind(name, [sys.executable, "-m", "ollama_proxy", "--config", str(config)],
                                       workdir, env)
                    ready, path = f"http://127.0.0.1:{port}/health", "/api/generate"
                elif system == "plain":
                    target = Callgrind("plain aiohttp passthrough",
                                       [sys.executable, str(HERE / "plain_passthrough.py"), str(port), sim.url],
                                       workdir, python_env(None))
                    ready, path = f"http://127.0.0.1:{port}/api/version", "/api/generate"
                else:
                    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
                    if not Path(nginx).exists():
                        print("nginx: not installed, skipped", file=sys.stderr)
                        continue
                    prefix = workdir / "nginx-prefix"
                    prefix.mkdir()
                    conf = nginx_config(prefix, port, sim.port)
                    target = Callgrind("nginx", [nginx, "-p", str(prefix), "-c", str(conf),
                                                 "-e", str(prefix / "error.log"),
                                                 "-g", "daemon off; master_process off;"], workdir)
                    ready, path = f"http://127.0.0.1:{port}/api/version", "/api/generate"
                started.append(target)
                try:
                    await wait_up(target, ready, args.start_timeout)
                    connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection, like wrk -c1
                    async with aiohttp.ClientSession(connector=connector) as session:
                        results.append(await measure(target, session, f"http://127.0.0.1:{port}{path}", sim, args))
                except Exception:
                    print(f"{target.name} failed; valgrind output:\n{target.log_tail()}", file=sys.stderr)
                    raise
                finally:
                    target.stop()
                r = results[-1] if results and results[-1].system == target.name else None
                if r:
                    print(f"  {r.system}: {r.per_request:,.0f} instructions/request", flush=True)
    finally:
        for target in started:
            target.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--route", choices=("passthrough", "auto"), default="passthrough")
    parser.add_argument("--src", help="a src/ directory put first on the proxy's PYTHONPATH (another checkout)")
    parser.add_argument("--backends", type=int, default=1, help="backends the proxy routes between (one simulator)")
    parser.add_argument("--engines", default="", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                        help="measure the proxy once per server.engine listed (fast, aiohttp); "
                             "default: once, with the configured default")
    parser.add_argument("--upstream-clients", default="", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                        help="measure the proxy once per server.upstream_client listed (raw, aiohttp); "
                             "default: once, with the configured default")
    parser.add_argument("--chunks", type=int, default=200, help="num_predict of the streamed generate (0: skip)")
    parser.add_argument("--chunk-gap-ms", type=float, default=20.0, help="backend pacing of the streamed chunks")
    parser.add_argument("--systems", default="proxy,plain,nginx",
                        type=lambda s: [x.strip() for x in s.split(",") if x.strip()])
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="the proxy's log level (INFO, its default, writes an access line per request)")
    parser.add_argument("--streams", type=int, default=3, help="streamed generates in the chunk window")
    parser.add_argument("--keep-timers", action="store_true",
                        help="keep the proxy's periodic health probe and polls (5 s) inside the windows")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--start-timeout", type=float, default=180.0)
    args = parser.parse_args()
    unknown = set(args.systems) - {"proxy", "plain", "nginx"}
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    if set(args.upstream_clients) - {"raw", "aiohttp"}:
        parser.error("--upstream-clients takes raw and/or aiohttp")
    if set(args.engines) - {"fast", "aiohttp"}:
        parser.error("--engines takes fast and/or aiohttp")
    if "proxy" in args.systems:
        at = args.systems.index("proxy")
        args.systems[at:at + 1] = [f"proxy:{engine}:{client}" for engine in args.engines or [""]
                                   for client in args.upstream_clients or [""]]
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        sys.exit("bench/instructions.py needs valgrind (Debian package `valgrind`)")
    results = asyncio.run(run(args))
    print(f"\nroute={args.route} backends={args.backends} requests={args.requests} chunks={args.chunks}x{args.streams} "
          f"(gap {args.chunk_gap_ms:g} ms) proxy log_level={args.log_level}")
    print(f"{'system':<30} {'instructions/request':>21} {'instructions/chunk':>19} {'idle Ir/s':>10} "
          f"{'s/request*':>11}")
    for r in results:
        chunk = f"{r.per_chunk:,.0f}" if r.per_chunk is not None else "-"
        print(f"{r.system:<30} {r.per_request:>21,.0f} {chunk:>19} {r.idle_per_s:>10,.0f} "
              f"{r.seconds_per_request:>11.4f}")
    print("* wall time per request under callgrind, for orientation only")


if __name__ == "__main__":
    main()
