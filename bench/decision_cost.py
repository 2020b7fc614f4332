"""What the per-request decisions cost, in process: sizing, routing and admission.

Not a test. Each part runs `--count` decisions after `--warm` ones (which fill the caches a server
has filled long before):

  - sizing:       a typical chat body (system prompt and three turns, ~1,500 characters, num_predict
                  set): count the prompt, the tokens it needs (the router's input), `num_ctx` for the
                  chosen backend written into the body, and learning from the answer's final line,
                  as `Pipeline` calls them
  - route-4, route-100: `Router.decide` over 4 and 100 laptop-like backends (bench/routing_decision.py's
                  fleet) after what a server does between two decisions: one finished request learned
                  (`Router.observe_latency` with the final line's numbers) and the load board changed
  - decide-4, decide-100: `Router.decide` alone, nothing changed since the last one
  - admission:    `AdmissionGate.admit` enter and exit with nobody queued, as the pool wires it (the
                  load board told of each change)

Wall clock (the default): microseconds per decision, median of `--rounds` rounds. Instructions
(`--callgrind`): each part runs twice under `valgrind --tool=callgrind`, with `--count` decisions and
with none; the difference over `--count` is the instructions per decision, start-up and warm-up
cancelled out. One run by hand, to read its profile in callgrind_annotate or kcachegrind:

    valgrind --tool=callgrind python bench/decision_cost.py --part route-4 --count 2000

Usage: python bench/decision_cost.py [--callgrind] [--parts sizing,route-4,...] [--count N]
                                     [--warm N] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from routing_decision import build_router

from ollama_proxy.config.load import validate
from ollama_proxy.core.admission import Priority
from ollama_proxy.core.operations import Operation
from ollama_proxy.core.routing.state import RouteRequest
from ollama_proxy.service.context import ContextService
from ollama_proxy.service.pool import BackendPool
from ollama_proxy.service.tasks import TaskSet
from ollama_proxy.testing.memory import MemoryResponse, MemoryTransport

MODEL = "llama3.2:latest"
CHAT = {"model": MODEL, "stream": False, "options": {"num_predict": 256, "temperature": 0.2}, "messages": [
    {"role": "system", "content": "You are a careful assistant. Answer briefly and cite the file you read. " * 4},
    {"role": "user", "content": "Where does the proxy choose num_ctx, and why does it never shrink it? " * 3},
    {"role": "assistant", "content": "In core/context/sizing.py: a loaded model keeps its context, so " * 5},
    {"role": "user", "content": "And what happens when nothing fits? Show me the header it sends. " * 3},
]}
FINAL = {"model": MODEL, "done": True, "done_reason": "stop", "prompt_eval_count": 420, "eval_count": 120,
         "eval_duration": 1_500_000_000, "load_duration": 2_000_000, "total_duration": 1_800_000_000}
_TOTALS = re.compile(rb"^totals:\s+(\d+)", re.MULTILINE)

Decision = Callable[[], Awaitable[object]]


def sizing_part() -> Decision:
    config = validate({"backends": [{"id": "gpu", "endpoint": "http://127.0.0.1:20000"}]})
    show = {"model_info": {"llama.context_length": 131072}}
    transport = MemoryTransport({"gpu": lambda request: MemoryResponse.json(show)})
    pool = BackendPool(config.backends, config.router, transport, TaskSet())
    backend = pool.backends["gpu"]
    backend.reachable, backend.models = True, {MODEL}
    context = ContextService(config.context, pool, TaskSet())

    async def decide() -> object:
        sizing = await context.count(MODEL, CHAT, pool.holder_of(MODEL))
        context.required(sizing, Operation.CHAT, CHAT)
        decision = await context.size(sizing, backend, dict(CHAT), None)
        context.observe(sizing, FINAL, backend)
        return decision

    return decide


def route_part(backends: int, *, learn: bool) -> Decision:
    router = build_router(backends, random.Random(backends))
    request = RouteRequest(model=MODEL)
    first = router.pool.backends["b0"]
    queue = first.gate.queue

    async def decide() -> object:
        return router.decide(request)

    async def decide_after_completion() -> object:
        # What a server does between two decisions: a request finished (its slot freed, what it took learned).
        queue.try_acquire("finished", Priority.NORMAL, 0.0)
        queue.release("finished", 0.0)
        router.observe_latency(first, MODEL, ttft_ms=60.0, total_ms=900.0, final=FINAL, operation=Operation.CHAT,
                               body=CHAT)
        return router.decide(request)

    return decide_after_completion if learn else decide


def admission_part() -> Decision:
    config = validate({"backends": [{"id": "gpu", "endpoint": "http://127.0.0.1:20000"}]})
    pool = BackendPool(config.backends, config.router, MemoryTransport(), TaskSet())
    gate = pool.backends["gpu"].gate

    async def enter_and_exit() -> object:
        async with gate.admit(Priority.NORMAL) as waited:
            return waited

    return enter_and_exit


PARTS: dict[str, Callable[[], Decision]] = {
    "sizing": sizing_part,
    "route-4": lambda: route_part(4, learn=True),
    "route-100": lambda: route_part(100, learn=True),
    "decide-4": lambda: route_part(4, learn=False),
    "decide-100": lambda: route_part(100, learn=False),
    "admission": admission_part,
}


async def run(part: str, warm: int, count: int, rounds: int) -> list[float]:
    """Per-decision microseconds of each round (one round, unreported, under callgrind)."""
    decide = PARTS[part]()
    for _ in range(warm):
        await decide()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(count):
            await decide()
        samples.append((time.perf_counter() - start) / max(count, 1) * 1e6)
    return samples


def instructions(part: str, warm: int, count: int) -> float:
    """Instructions per decision: (a run with `count` decisions - one with none) / `count`."""
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (count, 0):
            out = Path(tmp) / f"callgrind.{part}.{n}"
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--log-file=/dev/null",
                            sys.executable, __file__, "--part", part, "--warm", str(warm), "--count", str(n)],
                           # numpy's OpenBLAS worker threads add a varying count (±5 k) otherwise.
                           check=True, env={**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"})
            found = _TOTALS.search(out.read_bytes())
            if found is None:
                raise RuntimeError(f"no totals in {out}")
            totals.append(int(found.group(1)))
    return (totals[0] - totals[1]) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS))
    parser.add_argument("--part", choices=PARTS, help="run this part once, silently (what valgrind runs)")
    parser.add_argument("--callgrind", action="store_true", help="instructions per decision instead of time")
    parser.add_argument("--count", type=int, default=None, help="decisions per run (default 20000, 2000 "
                        "under callgrind)")
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.part:
        asyncio.run(run(args.part, args.warm, 2000 if args.count is None else args.count, 1))
        return
    parts = args.parts.split(",")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown parts {', '.join(unknown)}; known: {', '.join(PARTS)}")
    if args.callgrind:
        count = args.count or 2000
        print(f"instructions per decision (callgrind, {count} decisions minus none)")
        for part in parts:
            print(f"  {part:<11} {instructions(part, args.warm, count) / 1000:8.1f} k", flush=True)
        return
    count = args.count or 20000
    print(f"microseconds per decision, median of {args.rounds} rounds of {count}")
    for part in parts:
        samples: Any = asyncio.run(run(part, args.warm, count, args.rounds))
        print(f"  {part:<11} {statistics.median(samples):8.2f} us", flush=True)


if __name__ == "__main__":
    main()
