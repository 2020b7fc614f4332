"""Streaming latency per protocol: time to first token and the gap between tokens, in the same run, for

  - HTTP NDJSON straight to the simulator (the floor),
  - HTTP NDJSON through the proxy (`/proxy-context/auto/api/generate`),
  - WebSocket through the proxy (`/v1/stream/ws`, one socket, requests one after another),
  - gRPC through the proxy (`ollama_proxy.OllamaProxy/Generate`; skipped with a note when the stubs or
    grpcio are missing).

Not a test. Starts one simulator with a fixed token rate (the nvidia profile, 90 tokens/s, scaled by
--time-scale) and the proxy as separate processes, then runs rounds in which every protocol streams the
same generate once, so all see the same machine state. Reports per protocol, over every repetition:

  - ttft_ms p50/p90: request sent -> first token received, at the client
  - gap_ms p50/p90: between consecutive tokens of one reply, at the client (the pace the simulator
    sets, plus whatever the path adds or bunches)
  - per_token_ms p50: a reply's first-to-last token time over its gaps (what bunching hides from the gaps)
  - added: each proxied protocol's ttft and gap medians minus direct HTTP's

With --time-scale 0 the simulator sends as fast as it can, and the gaps are each path's cost per token.

Usage: python bench/stream_latency.py [--rounds 30] [--tokens 50] [--time-scale 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import websockets
from proxy_overhead import free_port, percentile, wait_ready

# What auto-sizing chooses for a short prompt (the smallest of context.sizes). The simulator, like
# Ollama, reloads the model whenever num_ctx changes, so the direct requests send the same.
SIZED_NUM_CTX = 2048
# One reply's token arrival times, seconds after the request was sent.
Stream = Callable[[str], Awaitable[list[float]]]


async def timed(tokens: AsyncIterator[Any]) -> list[float]:
    start = time.perf_counter()
    return [time.perf_counter() - start async for _ in tokens]


def http_stream(session: aiohttp.ClientSession, url: str, options: dict[str, int]) -> Stream:
    async def lines(prompt: str) -> AsyncIterator[bytes]:
        body = {"model": "llama3.2", "prompt": prompt, "stream": True, "options": options}
        async with session.post(url, json=body) as r:
            assert r.status == 200, r.status
            async for line in r.content:
                if b'"done":true' not in line:
                    yield line

    return lambda prompt: timed(lines(prompt))


def websocket_stream(ws: websockets.ClientConnection, tokens: int) -> Stream:
    async def frames(prompt: str) -> AsyncIterator[str]:
        await ws.send(json.dumps({"model": "llama3.2", "prompt": prompt, "options": {"num_predict": tokens}}))
        while True:
            message = json.loads(await ws.recv())
            if "error" in message:
                raise RuntimeError(message["error"])
            if message.get("done"):
                return
            yield message["token"]

    return lambda prompt: timed(frames(prompt))


def grpc_stream(stub: Any, pb2: Any, tokens: int) -> Stream:
    from google.protobuf.struct_pb2 import Struct

    async def chunks(prompt: str) -> AsyncIterator[str]:
        options = Struct()
        options.update({"num_predict": tokens})
        async for chunk in stub.Generate(pb2.GenerateRequest(model="llama3.2", prompt=prompt, options=options)):
            if chunk.done:
                return
            yield chunk.token

    return lambda prompt: timed(chunks(prompt))


def load_grpc() -> tuple[Any, Any, Any] | str:
    """(grpc.aio, pb2, pb2_grpc), or why gRPC is left out."""
    try:
        from grpc import aio

        from ollama_proxy.adapters.grpc.generated import ollama_proxy_pb2, ollama_proxy_pb2_grpc
    except ImportError as exc:
        return f"gRPC skipped: {exc}"
    return aio, ollama_proxy_pb2, ollama_proxy_pb2_grpc


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sim_port, proxy_port, grpc_port = free_port(), free_port(), free_port()
    grpc_parts = load_grpc()
    config = Path(tempfile.mkdtemp()) / "proxy.yaml"
    config.write_text(json.dumps({
        "server": {"http_port": proxy_port, "grpc_port": grpc_port, "grpc_enabled": not isinstance(grpc_parts, str)},
        "log_level": "WARNING",
        "backends": [{"id": "sim", "endpoint": f"http://127.0.0.1:{sim_port}",
                      "characteristics": {"max_concurrent": 8}}]}))
    sim = subprocess.Popen([sys.executable, "-m", "ollama_proxy", "simulate", "--port", str(sim_port),
                            "--models", "llama3.2", "--profile", "nvidia", "--time-scale", str(args.time_scale),
                            "--reply-tokens", f"{args.tokens},{args.tokens}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = subprocess.Popen([sys.executable, "-m", "ollama_proxy", "--config", str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    notes: list[str] = []
    try:
        direct, proxied = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{proxy_port}"
        await wait_ready(direct + "/api/version")
        await wait_ready(proxied + "/health")
        async with aiohttp.ClientSession() as session, \
                websockets.connect(f"ws://127.0.0.1:{proxy_port}/v1/stream/ws", compression=None) as ws:
            streams: dict[str, Stream] = {
                # The size the proxy picks for these prompts: with another one every switch would reload.
                "http_direct": http_stream(session, direct + "/api/generate",
                                           {"num_predict": args.tokens, "num_ctx": SIZED_NUM_CTX}),
                "http_proxy": http_stream(session, proxied + "/proxy-context/auto/api/generate",
                                          {"num_predict": args.tokens}),
                "websocket": websocket_stream(ws, args.tokens)}
            channel = None
            if isinstance(grpc_parts, str):
                notes.append(grpc_parts)
            else:
                aio, pb2, pb2_grpc = grpc_parts
                channel = aio.insecure_channel(f"127.0.0.1:{grpc_port}")
                streams["grpc"] = grpc_stream(pb2_grpc.OllamaProxyStub(channel), pb2, args.tokens)
            try:
                return await measure(streams, args) | {"notes": notes}
            finally:
                if channel is not None:
                    await channel.close()
    finally:
        for process in (proxy, sim):
            process.terminate()
            process.wait(timeout=10)


async def measure(streams: dict[str, Stream], args: argparse.Namespace) -> dict[str, Any]:
    ttft: dict[str, list[float]] = {name: [] for name in streams}
    gaps: dict[str, list[float]] = {name: [] for name in streams}
    spans: dict[str, list[float]] = {name: [] for name in streams}
    for name, stream in streams.items():  # warm every path, the model and the proxy's learned state
        for i in range(3):
            await stream(f"warm up {name} {i}")
    for round_ in range(args.rounds):
        for name, stream in streams.items():
            arrivals = await stream(f"Tell a story, round {round_}")
            assert len(arrivals) == args.tokens, f"{name}: {len(arrivals)} tokens"
            # As long as a model load (the nvidia profile's 0.4 s, scaled): num_ctx changed between protocols.
            assert not args.time_scale or arrivals[0] < 0.4 * args.time_scale, \
                f"{name}: a reload? first token after {arrivals[0]:.3f} s"
            ttft[name].append(arrivals[0] * 1000)
            gaps[name].extend((b - a) * 1000 for a, b in itertools.pairwise(arrivals))
            spans[name].append((arrivals[-1] - arrivals[0]) * 1000 / (len(arrivals) - 1))
    figures: dict[str, Any] = {}
    for name in streams:
        figures[name] = {"ttft_ms_p50": statistics.median(ttft[name]), "ttft_ms_p90": percentile(ttft[name], 0.9),
                         "gap_ms_p50": statistics.median(gaps[name]), "gap_ms_p90": percentile(gaps[name], 0.9),
                         "per_token_ms_p50": statistics.median(spans[name])}
    base = figures["http_direct"]
    for name in streams:
        if name != "http_direct":
            figures[name]["added_ttft_ms_p50"] = figures[name]["ttft_ms_p50"] - base["ttft_ms_p50"]
            figures[name]["added_gap_ms_p50"] = figures[name]["gap_ms_p50"] - base["gap_ms_p50"]
            figures[name]["added_per_token_ms_p50"] = figures[name]["per_token_ms_p50"] - base["per_token_ms_p50"]
    return {"rounds": args.rounds, "tokens_per_reply": args.tokens,
            "sim_token_interval_ms": 1000 / 90 * args.time_scale, "protocols": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--time-scale", type=float, default=0.1,
                        help="the nvidia profile's delays times this (0.1: a token every 1.1 ms, first after 4 ms)")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    print(f"\n{'protocol':<12} {'ttft p50':>9} {'ttft p90':>9} {'gap p50':>8} {'gap p90':>8} {'per token':>9}  (ms)")
    for name, f in result["protocols"].items():
        print(f"{name:<12} {f['ttft_ms_p50']:9.2f} {f['ttft_ms_p90']:9.2f} {f['gap_ms_p50']:8.3f} "
              f"{f['gap_ms_p90']:8.3f} {f['per_token_ms_p50']:9.4f}")
    for note in result["notes"]:
        print(note)


if __name__ == "__main__":
    main()
