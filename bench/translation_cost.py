"""The per-token cost of translating a protocol: one streamed chat of N tokens through the proxy to an
instant simulator, as a native `/api/chat`, an OpenAI chat completion, an Anthropic message and an OpenAI
Response, in one run.

Not a test. The simulator and the proxy run as separate processes; the protocols take turns within each
round so they see the same machine state. Reported, as medians over rounds:

  - proxy CPU per streamed chunk (from /proc, so the load generator's own work is not counted), and its
    ratio to the native stream's; the slope between a 1-token and an N-token stream, so per-request work
    is left out
  - wall time per chunk added over a native stream straight to the simulator (the same slope)
  - in process, without sockets: each translator's `feed()` per native line, and with the SSE framing the
    front adds (`encode_event`)

Usage: python bench/translation_cost.py [--rounds 5] [--streams 20] [--tokens 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from proxy_overhead import cpu_seconds, free_port, wait_ready

from ollama_proxy.core.openai.sse import encode_event
from ollama_proxy.core.operations import Dialect, Operation
from ollama_proxy.core.translators import TRANSLATORS

MODEL = "llama3.2"
PROMPT = "Tell me a long story"


def requests(tokens: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """Per protocol: the path and a streamed request for `tokens` tokens of the same chat."""
    chat = [{"role": "user", "content": PROMPT}]
    return {
        "native": ("/api/chat", {"model": MODEL, "messages": chat, "stream": True,
                                 "options": {"num_predict": tokens}}),
        "openai": ("/v1/chat/completions", {"model": MODEL, "messages": chat, "stream": True,
                                            "max_tokens": tokens}),
        "anthropic": ("/v1/messages", {"model": MODEL, "messages": chat, "stream": True, "max_tokens": tokens}),
        "responses": ("/v1/responses", {"model": MODEL, "input": PROMPT, "stream": True,
                                        "max_output_tokens": tokens}),
    }


_TRANSLATOR_KEYS = {"openai": (Dialect.OPENAI, Operation.CHAT), "anthropic": (Dialect.ANTHROPIC, Operation.CHAT),
                    "responses": (Dialect.OPENAI, Operation.RESPONSES)}


async def stream_once(session: aiohttp.ClientSession, url: str, body: bytes) -> float:
    start = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 200, (url, r.status, await r.text())
        async for _ in r.content.iter_any():
            pass
    return time.perf_counter() - start


async def over_sockets(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Per protocol, the slope between a one-token and an N-token stream: what each further chunk costs, with
    the per-request work (parsing, sizing, routing, the first event) left out."""
    sim_port, proxy_port = free_port(), free_port()
    config = Path(tempfile.mkdtemp()) / "proxy.yaml"
    config.write_text(json.dumps({
        "server": {"http_port": proxy_port}, "log_level": "WARNING",
        "backends": [{"id": "sim", "endpoint": f"http://127.0.0.1:{sim_port}",
                      "characteristics": {"max_concurrent": 1024}}]}))
    sim = subprocess.Popen([sys.executable, "-m", "ollama_proxy", "simulate", "--port", str(sim_port),
                            "--models", MODEL, "--time-scale", "0", "--reply-tokens", f"{args.tokens},{args.tokens}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = subprocess.Popen([sys.executable, "-m", "ollama_proxy", "--config", str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lengths = {"long": args.tokens, "short": 1}
    try:
        direct, proxied = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{proxy_port}"
        await wait_ready(direct + "/api/version")
        await wait_ready(proxied + "/health")
        bodies = {(name, length): (path, json.dumps(body).encode())
                  for length, tokens in lengths.items() for name, (path, body) in requests(tokens).items()}
        wall: dict[tuple[str, str], list[float]] = {key: [] for key in [*bodies, *(("direct", n) for n in lengths)]}
        cpu: dict[tuple[str, str], list[float]] = {key: [] for key in bodies}
        async with aiohttp.ClientSession() as session:
            for path, body in bodies.values():  # warm every path, the model and the counter
                for _ in range(3):
                    await stream_once(session, proxied + path, body)
            for _ in range(args.rounds):
                for length in lengths:
                    native = bodies["native", length][1]
                    wall["direct", length].append(statistics.median(
                        [await stream_once(session, direct + "/api/chat", native) for _ in range(args.streams)]))
                for (name, length), (path, body) in bodies.items():
                    before = cpu_seconds(proxy.pid)
                    times = [await stream_once(session, proxied + path, body) for _ in range(args.streams)]
                    cpu[name, length].append((cpu_seconds(proxy.pid) - before) / args.streams)
                    wall[name, length].append(statistics.median(times))
    finally:
        for process in (proxy, sim):
            process.terminate()
            process.wait(timeout=10)

    def slope(series: dict[tuple[str, str], list[float]], name: str) -> float:
        return ((statistics.median(series[name, "long"]) - statistics.median(series[name, "short"]))
                * 1e6 / (args.tokens - 1))

    names = [name for name, length in bodies if length == "long"]
    native_cpu = slope(cpu, "native")
    return {name: {"cpu_us_per_chunk": slope(cpu, name), "cpu_ratio_to_native": slope(cpu, name) / native_cpu,
                   "wall_us_per_chunk_added": slope(wall, name) - slope(wall, "direct")} for name in names}


def native_lines(tokens: int) -> list[dict[str, Any]]:
    """A native chat stream of `tokens` one-word lines and its final line, as the simulator writes them."""
    line = {"model": MODEL, "created_at": "2026-01-01T00:00:00.000000Z"}
    lines = [line | {"message": {"role": "assistant", "content": f" word{i % 50}"}, "done": False}
             for i in range(tokens)]
    return [*lines, line | {"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
                            "prompt_eval_count": 12, "eval_count": tokens, "total_duration": 1000}]


def in_process(tokens: int, repeats: int) -> dict[str, dict[str, float]]:
    lines = native_lines(tokens)
    figures: dict[str, dict[str, float]] = {}
    bodies = requests(tokens)
    for name, key in _TRANSLATOR_KEYS.items():
        translation = TRANSLATORS[key](bodies[name][1]).translation

        def feed_all(encode: Callable[[Any], bytes] | None, translation: Any = translation) -> float:
            translator = translation.translator(rng=random.Random(0), now=0.0)
            start = time.perf_counter()
            for native in lines:
                for event in translator.feed(native):
                    if encode is not None:
                        encode(event)
            return time.perf_counter() - start

        figures[name] = {
            "feed_us_per_line": statistics.median(feed_all(None) for _ in range(repeats)) * 1e6 / len(lines),
            "feed_and_sse_us_per_line": statistics.median(
                feed_all(encode_event) for _ in range(repeats)) * 1e6 / len(lines)}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--streams", type=int, default=20, help="streams per protocol and length per round")
    parser.add_argument("--tokens", type=int, default=1000, help="tokens (chunks) of the long stream")
    args = parser.parse_args()
    missing = [name for name, key in _TRANSLATOR_KEYS.items() if key not in TRANSLATORS]
    if missing:
        sys.exit(f"not translated by this proxy yet: {', '.join(missing)} (it would be forwarded, not measured)")
    sockets = asyncio.run(over_sockets(args))
    pure = in_process(args.tokens, repeats=50)
    print(f"rounds={args.rounds} streams/round={args.streams} tokens/stream={args.tokens}")
    print(f"{'protocol':<10} {'proxy CPU µs/chunk':>19} {'× native':>9} {'wall µs/chunk added':>20} "
          f"{'feed() µs/line':>15} {'feed+SSE µs/line':>17}")
    for name, figures in sockets.items():
        # The native stream is relayed as bytes: it has no translator to time.
        feed = pure.get(name)
        pure_columns = (f"{feed['feed_us_per_line']:>15.2f} {feed['feed_and_sse_us_per_line']:>17.2f}" if feed
                        else f"{'-':>15} {'-':>17}")
        print(f"{name:<10} {figures['cpu_us_per_chunk']:>19.1f} {figures['cpu_ratio_to_native']:>9.2f} "
              f"{figures['wall_us_per_chunk_added']:>20.1f} {pure_columns}")


if __name__ == "__main__":
    main()
