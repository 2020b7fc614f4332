"""What the context engine costs: exact token counting of a 32K-token prompt, and the latency that
auto-sizing adds to each request compared with passthrough.

Not a test. Counting uses real llama.cpp vocabularies (OLLAMA_PROXY_VOCAB_DIR, see
tests/unit/context/conftest.py; skipped without it) and reports, per vocabulary:

  - build_ms:        building the tokenizer from the GGUF metadata (once per model digest)
  - cold_ms:         the first count after the build, of a text never seen
  - warm_ms:         median count of further unseen 32K-token texts made of words seen before
                     (target: under 10 ms); counts of the chunks between spaces are remembered
  - novel_ms:        median count of 32K-token texts of random identifiers, where nearly every
                     word is new (the worst case for that memory)
  - chat_turn_ms:    median count of a 32K-token chat whose earlier messages were counted before
                     (what a growing conversation costs per request)

The latency half runs bench/proxy_overhead.py once per route and prints the two side by side.

Usage: python bench/context.py [--vocab llama-bpe --vocab qwen2] [--tokens 32768] [--rounds 3]
                               [--requests 300] [--skip-latency]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy_overhead import run as run_overhead

from ollama_proxy.core.context import CachedCounter, GgufTokenizer, build_tokenizer, count_prompt, prompt_parts

# The unit tests' GGUF reader takes a fraction of a second where gguf.GGUFReader takes tens of seconds.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit" / "context"))
from gguf_vocab import read_model_info

_WORDS = ("the", "proxy", "counts", "tokens", "before", "sending", "each", "request", "so", "that", "Ollama",
          "never", "truncates", "a", "prompt", "def", "return", "None", "{", "}", "(", ")", "=", "42", "3.14",
          "naïve", "café", "日本語", "emoji", "🙂", "\n", "\t", "JSON", '"key":', "[1, 2, 3]", "https://x.org")


def text_of(tokens: int, seed: int, count: Callable[[str], int], *, novel: bool = False) -> str:
    """Varied text (prose, code, numbers, non-ASCII) of about `tokens` tokens by `count`; `novel`
    makes it random identifiers instead, nearly all new."""
    rng = random.Random(seed)
    if novel:
        alphabet = string.ascii_letters + string.digits + "_"
        words = ["".join(rng.choices(alphabet, k=rng.randint(2, 9))) for _ in range(tokens)]
    else:
        words = [rng.choice(_WORDS) for _ in range(tokens)]
    n = tokens // 2
    for _ in range(3):  # scale the word count by the measured tokens per word
        n = min(len(words), max(1, round(n * tokens / max(count(" ".join(words[:n])), 1))))
    return " ".join(words[:n])


def ms(seconds: float) -> float:
    return seconds * 1000


def bench_vocab(path: Path, tokens: int, repeats: int) -> dict[str, float]:
    info = read_model_info(path)
    start = time.perf_counter()
    tokenizer: GgufTokenizer = build_tokenizer(info)
    build = time.perf_counter() - start
    def count(text: str) -> int:  # sizes the texts without filling the tokenizer's chunk memory
        return len(tokenizer.encode(text, add_special=False))

    texts = [text_of(tokens, seed, count) for seed in range(repeats + 1)]
    novel = [text_of(tokens, 500 + seed, count, novel=True) for seed in range(repeats)]

    counter = CachedCounter(tokenizer.count_many)
    start = time.perf_counter()
    counted = counter.count([texts[0]])
    cold = time.perf_counter() - start
    warm = []
    for text in texts[1:]:
        start = time.perf_counter()
        counter.count([text])
        warm.append(time.perf_counter() - start)
    worst = []
    for text in novel:
        start = time.perf_counter()
        counter.count([text])
        worst.append(time.perf_counter() - start)

    # A conversation of 32 turns of about tokens/32 each: every request repeats the earlier turns.
    turns = [text_of(tokens // 32, 1000 + i, count) for i in range(32)]
    chat_counter = CachedCounter(tokenizer.count_many)
    per_turn = []
    for n in range(1, len(turns) + 1):
        body = {"messages": [{"role": "user" if i % 2 == 0 else "assistant", "content": t}
                             for i, t in enumerate(turns[:n])]}
        start = time.perf_counter()
        count = count_prompt(prompt_parts(body), exact=chat_counter)
        per_turn.append(time.perf_counter() - start)
    return {"tokens": float(counted), "build_ms": ms(build), "cold_ms": ms(cold),
            "warm_ms": ms(statistics.median(warm)), "warm_max_ms": ms(max(warm)),
            "novel_ms": ms(statistics.median(worst)),
            "chat_tokens": float(count.tokens), "chat_turn_ms": ms(statistics.median(per_turn[-8:]))}


def latency(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}
    for route in ("passthrough", "auto"):
        ns = argparse.Namespace(rounds=args.rounds, requests=args.requests, chunks=args.chunks, route=route)
        figures[route] = asyncio.run(run_overhead(ns))
    return figures


def print_table(title: str, rows: dict[str, dict[str, float]]) -> None:
    columns = list(rows)
    keys = list(next(iter(rows.values())))
    width = max(map(len, keys))
    print(title)
    print(f"{'':<{width}}  " + "  ".join(f"{c:>12}" for c in columns))
    for key in keys:
        print(f"{key:<{width}}  " + "  ".join(f"{rows[c].get(key, float('nan')):12.2f}" for c in columns))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", action="append", help="ggml-vocab-NAME.gguf to use (default llama-bpe, qwen2)")
    parser.add_argument("--tokens", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()

    directory = os.environ.get("OLLAMA_PROXY_VOCAB_DIR")
    if directory:
        counting: dict[str, Any] = {}
        for name in args.vocab or ["llama-bpe", "qwen2"]:
            counting[name] = bench_vocab(Path(directory) / f"ggml-vocab-{name}.gguf", args.tokens, args.repeats)
        print_table(f"exact counting, {args.tokens}-token prompts", counting)
    else:
        print("OLLAMA_PROXY_VOCAB_DIR is not set: exact counting not measured\n")
    if not args.skip_latency:
        print_table(f"proxy overhead by route ({args.rounds} rounds x {args.requests} requests; "
                    "microseconds unless named)", latency(args))


if __name__ == "__main__":
    main()
