"""The upstream clients alone: the raw client (`server.upstream_client: raw`) against aiohttp's, same backend.

Not a test. A minimal HTTP/1.1 backend (an `asyncio.Protocol` sending pre-built bytes) runs in its own
process, so that the client's process does nothing but the client's work, on uvloop as the proxy runs.

Wall clock (the default): rounds alternate between the clients; medians of
  - wall time per non-streamed request (sequential, keep-alive; a ~500-byte JSON reply), p50 and p90
  - the client process's CPU per request (user + system: syscalls are the client's work too)

Instructions (`--instructions`, needs valgrind): the client process runs under callgrind three times per
client, A (`--requests` requests, a 10-chunk stream), B (5 x `--requests` requests, the same stream) and
C (A's requests, a stream of 10 + `--chunks` chunks sent `--chunk-gap-ms` apart, so that each is read on
its own); start-up and warm-up are the same in all three, so
  - instructions per request = (B - A) / (4 x requests)
  - instructions per streamed chunk = (C - A) / (the reads of C - those of A): on a busy machine a few
    chunks still arrive together and are read as one

Usage: python bench/upstream_client.py [--rounds 5] [--requests 2000]
       python bench/upstream_client.py --instructions [--requests 300] [--chunks 400] [--chunk-gap-ms 10]
"""

from __future__ import annotations

import argparse
import asyncio
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
from typing import cast

import orjson
from proxy_overhead import free_port

from ollama_proxy.adapters.upstream.aiohttp_client import AiohttpBackendClient
from ollama_proxy.adapters.upstream.raw_client import RawBackendClient
from ollama_proxy.service.transport import BackendClient

REPLY = orjson.dumps({"model": "llama3.2", "created_at": "2024-01-01T00:00:00Z", "response": "Hello " * 60,
                      "done": True, "eval_count": 60})
LINE = orjson.dumps({"model": "llama3.2", "created_at": "2024-01-01T00:00:00Z", "response": " token",
                     "done": False}) + b"\n"
REQUEST = orjson.dumps({"model": "llama3.2", "prompt": "Hi", "stream": False})
CLIENTS = {"raw": RawBackendClient, "aiohttp": AiohttpBackendClient}
WARMUP = 200
_STREAM = re.compile(rb"^POST /stream/(\d+)/(\d+) ")
_TOTALS = re.compile(rb"^totals:\s+(\d+)", re.MULTILINE)


class _Backend(asyncio.Protocol):
    """Answers `POST /stream/<chunks>/<gap µs>` with a paced chunked NDJSON stream, anything else with REPLY."""

    def __init__(self) -> None:
        self._buffer = b""
        self._whole = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(REPLY)) + REPLY
        self._chunk = b"%x\r\n" % len(LINE) + LINE + b"\r\n"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while b"\r\n\r\n" in self._buffer:
            head, _, rest = self._buffer.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            if len(rest) < length:
                return
            self._buffer = rest[length:]
            stream = _STREAM.match(head)
            if stream is None:
                self.transport.write(self._whole)
                continue
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
            self._stream(int(stream[1]), int(stream[2]) / 1e6)

    def _stream(self, left: int, gap_s: float) -> None:
        if left == 0:
            self.transport.write(b"0\r\n\r\n")
            return
        self.transport.write(self._chunk)
        asyncio.get_running_loop().call_later(gap_s, self._stream, left - 1, gap_s)


def serve(port: int) -> None:
    import uvloop

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Backend, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def make_client(name: str, url: str) -> BackendClient:
    return CLIENTS[name]("bench", url, connect_timeout_s=5, first_byte_timeout_s=30, idle_timeout_s=30)


async def requests(client: BackendClient, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        async with client.open("POST", "/api/generate", body=REQUEST) as reply:
            await reply.read(1 << 20)
        times.append(time.perf_counter() - started)
    return times


async def stream(client: BackendClient, chunks: int, gap_s: float) -> int:
    reads = 0
    async with client.open("POST", f"/stream/{chunks}/{int(gap_s * 1e6)}", body=REQUEST) as reply:
        while await reply.readany():
            reads += 1
    return reads


async def wall_clock(args: argparse.Namespace, url: str) -> None:
    clients = {name: make_client(name, url) for name in CLIENTS}
    for client in clients.values():
        await client.start()
        await requests(client, WARMUP)
    p50: dict[str, list[float]] = {name: [] for name in clients}
    p90: dict[str, list[float]] = {name: [] for name in clients}
    cpu: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(args.rounds):
        for name, client in clients.items():
            started = time.process_time()
            times = await requests(client, args.requests)
            cpu[name].append((time.process_time() - started) / args.requests)
            p50[name].append(statistics.median(times))
            p90[name].append(statistics.quantiles(times, n=10)[-1])
    for client in clients.values():
        await client.close()
    print(f"rounds={args.rounds} requests={args.requests}")
    print(f"{'client':<10} {'p50 µs/request':>15} {'p90 µs/request':>15} {'CPU µs/request':>15}")
    for name in clients:
        print(f"{name:<10} {statistics.median(p50[name]) * 1e6:>15.1f} {statistics.median(p90[name]) * 1e6:>15.1f} "
              f"{statistics.median(cpu[name]) * 1e6:>15.1f}")


async def counted_run(name: str, url: str, n: int, chunks: int, gap_s: float) -> None:
    """What runs under callgrind: the same warm-up every time, then `n` requests and one stream."""
    client = make_client(name, url)
    await client.start()
    await requests(client, WARMUP)
    await requests(client, n)
    print(await stream(client, chunks, gap_s))  # its reads, for the parent
    await client.close()


def instructions(args: argparse.Namespace, port: int) -> None:
    if not shutil.which("valgrind"):
        sys.exit("--instructions needs valgrind (Debian package `valgrind`)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-upstream-"))
    env = dict(os.environ, PYTHONHASHSEED="0")

    def run(name: str, n: int, chunks: int) -> tuple[int, int]:
        """Instructions and body reads of one run."""
        out = workdir / f"{name}-{n}-{chunks}.out"
        done = subprocess.run(["valgrind", "--tool=callgrind", "--trace-children=no", f"--callgrind-out-file={out}",
                        f"--log-file={workdir / 'valgrind.txt'}", sys.executable, __file__, "--count", name,
                        "--port", str(port), "--requests", str(n), "--chunks", str(chunks),
                               "--chunk-gap-ms", str(args.chunk_gap_ms)], check=True, env=env, capture_output=True)
        found = _TOTALS.search(out.read_bytes())
        assert found is not None, f"no totals in {out}"
        return int(found.group(1)), int(done.stdout.split()[-1])

    print(f"requests={args.requests} chunks={args.chunks} (gap {args.chunk_gap_ms:g} ms), under callgrind")
    print(f"{'client':<10} {'instructions/request':>21} {'instructions/chunk':>19}")
    try:
        for name in CLIENTS:
            base, base_reads = run(name, args.requests, 10)
            more_requests, _ = run(name, 5 * args.requests, 10)
            more_chunks, more_reads = run(name, args.requests, 10 + args.chunks)
            print(f"{name:<10} {(more_requests - base) / (4 * args.requests):>21,.0f} "
                  f"{(more_chunks - base) / (more_reads - base_reads):>19,.0f}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=None, help="default 2000, or 300 with --instructions")
    parser.add_argument("--instructions", action="store_true", help="count instructions under callgrind")
    parser.add_argument("--chunks", type=int, default=400)
    parser.add_argument("--chunk-gap-ms", type=float, default=10.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the backend process
    parser.add_argument("--count", choices=sorted(CLIENTS), help=argparse.SUPPRESS)  # a run under callgrind
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.requests is None:
        args.requests = 300 if args.instructions else 2000
    import uvloop

    if args.serve:
        serve(args.port)
        return
    if args.count:
        uvloop.run(counted_run(args.count, f"http://127.0.0.1:{args.port}", args.requests, args.chunks,
                               args.chunk_gap_ms / 1000))
        return
    port = free_port()
    backend = subprocess.Popen([sys.executable, __file__, "--serve", "--port", str(port)])
    try:
        wait_listening(port)
        if args.instructions:
            instructions(args, port)
        else:
            uvloop.run(wall_clock(args, f"http://127.0.0.1:{port}"))
    finally:
        backend.terminate()
        backend.wait(10)


if __name__ == "__main__":
    main()
