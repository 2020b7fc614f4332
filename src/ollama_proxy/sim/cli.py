"""Command-line entry of the simulator: `python -m ollama_proxy.sim --port P --models a,b --profile npu`.

Only turns arguments into a `SimConfig` and calls `run_sim`; `ollama-proxy simulate` can reuse
`add_arguments` and `config_from_args`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ollama_proxy.sim.config import PROFILES, SimConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--models", default="llama3.2,qwen3:4b,nomic-embed-text",
                        help="comma-separated names; `name=N` sets the trained context to N tokens")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="multiplies every delay (0: instant)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reply-tokens", default="5,40", help="MIN,MAX length of a natural reply in tokens")
    parser.add_argument("--num-parallel", type=int, default=1, help="OLLAMA_NUM_PARALLEL")
    parser.add_argument("--max-queue", type=int, default=512, help="OLLAMA_MAX_QUEUE")
    parser.add_argument("--max-loaded-models", type=int, default=3, help="OLLAMA_MAX_LOADED_MODELS")
    parser.add_argument("--default-num-ctx", type=int, default=4096,
                        help="context when a request sets none (the VRAM-tier default)")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        low, high = (int(part) for part in args.reply_tokens.split(","))
    except ValueError:
        raise ValueError(f"--reply-tokens expects MIN,MAX such as 5,40, got {args.reply_tokens!r}") from None
    return SimConfig(models=models, profile=args.profile, time_scale=args.time_scale, seed=args.seed,
                     num_parallel=args.num_parallel, max_queue=args.max_queue,
                     max_loaded_models=args.max_loaded_models, default_num_ctx=args.default_num_ctx,
                     reply_tokens=(low, high))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ollama_proxy.sim",
                                     description="Run a simulated Ollama server.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    # Imported here: the proxy's own command line adds these arguments and should not pay for the server.
    from ollama_proxy.sim.app import run_sim

    run_sim(config, host=args.host, port=args.port)
    return 0
