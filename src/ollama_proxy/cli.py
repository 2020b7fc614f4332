"""Command line: `ollama-proxy [serve]`, `ollama-proxy simulate`, `ollama-proxy demo`.

Exit status 2 for a bad flag or configuration, with one message that names the field.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from ollama_proxy import __version__
from ollama_proxy.app import configure_logging, install_fast_loop, serve_forever
from ollama_proxy.config.load import load_config
from ollama_proxy.errors import ConfigError, ListenError
from ollama_proxy.sim.cli import add_arguments as add_sim_arguments

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number 1-65535, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number 1-65535, got {value}")
    return value


def _log_level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return text.upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ollama-proxy",
        description="A drop-in proxy in front of Ollama: per-request context sizing, routing across backends.")
    parser.add_argument("--version", action="version", version=f"ollama-proxy {__version__}")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the proxy (the default)")
    _serve_flags(serve)
    _serve_flags(parser)  # so that `ollama-proxy --proxy-port 8080` works without `serve`

    add_sim_arguments(sub.add_parser("simulate", help="run a simulated Ollama server"))

    demo = sub.add_parser("demo", help="four simulated backends (npu, igpu, nvidia, cpu) behind the proxy")
    demo.add_argument("--proxy-port", type=_port, default=11435)
    demo.add_argument("--time-scale", type=float, default=0.5)
    demo.add_argument("--log-level", type=_log_level, default="INFO")
    return parser


def _serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (or OLLAMA_PROXY_CONFIG)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--proxy-port", type=_port, help="port to listen on (default 11435)")
    p.add_argument("--ollama-host", help="upstream Ollama host (default 127.0.0.1; or OLLAMA_BASE_URL)")
    p.add_argument("--ollama-port", type=_port, help="upstream Ollama port (default 11434)")
    p.add_argument("--log-level", type=_log_level, help="DEBUG, INFO, WARNING or ERROR (default INFO)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "serve"
    try:
        if command == "simulate":
            from ollama_proxy.sim import run_sim
            from ollama_proxy.sim.cli import config_from_args

            configure_logging("INFO")
            try:
                sim_config = config_from_args(args)
            except ValueError as exc:
                print(f"ollama-proxy simulate: {exc}", file=sys.stderr)
                return 2
            try:
                run_sim(sim_config, args.host, args.port)
            except OSError as exc:
                print(f"ollama-proxy simulate: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
                      file=sys.stderr)
                return 1
            return 0
        if command == "demo":
            from ollama_proxy.demo import run_demo

            configure_logging(args.log_level)
            install_fast_loop()
            return _run(run_demo(proxy_port=args.proxy_port, time_scale=args.time_scale))
        config = load_config(args.config, overrides={
            "host": args.host, "proxy_port": args.proxy_port, "ollama_host": args.ollama_host,
            "ollama_port": args.ollama_port, "log_level": args.log_level})
    except ConfigError as exc:
        print(f"ollama-proxy: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    install_fast_loop()
    return _run(serve_forever(config))


def _run(main: Coroutine[Any, Any, None]) -> int:
    """Run the proxy to its end: 0 after a signal stopped it, 1 with one line when it cannot listen."""
    try:
        asyncio.run(main)
    except ListenError as exc:
        print(f"ollama-proxy: {exc}", file=sys.stderr)
        return 1
    return 0
