"""Command line: `ollama-proxy [serve]`, `ollama-proxy status`, `ollama-proxy simulate`, `ollama-proxy demo`,
`ollama-proxy install-gnome-extension`, `ollama-proxy install-service`.

Exit status 2 for a bad flag or configuration, with one message that names the field or the flag.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import os
import sys
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from ollama_proxy import __version__
from ollama_proxy.adapters.systemd.unit import UNIT_NAME
from ollama_proxy.config.load import load_config, proxy_url, validate, with_listen_flags
from ollama_proxy.config.schema import Config
from ollama_proxy.errors import ConfigError, ListenError
from ollama_proxy.logs import configure_logging
from ollama_proxy.sim.cli import add_arguments as add_sim_arguments

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
EXAMPLES = """\
examples:
  ollama-proxy                                  serve on 127.0.0.1:11435 in front of Ollama on 127.0.0.1:11434
  ollama-proxy --ollama-host gpu-box:11434      in front of another machine (written as OLLAMA_HOST is)
  OLLAMA_BASE_URL=http://gpu-box:11434 ollama-proxy
  ollama-proxy --config proxy.yaml              several backends (see examples/laptop.yaml)
  ollama-proxy demo                             four simulated backends behind the proxy, no Ollama needed
  ollama-proxy status                           backends, mode and recent decisions of a running proxy
  ollama-proxy install-service                  run it as a systemd user service (--print: show the unit)

  OLLAMA_HOST=http://127.0.0.1:11435 ollama run llama3.2
  curl -si localhost:11435/proxy-context/auto/api/generate -d '{"model": "llama3.2", "prompt": "Hi"}'
      /proxy-context/auto/... sizes num_ctx for the prompt; /proxy-context/8192/... sets it;
      the X-Proxy-Context-* response headers say what was chosen and why

Flags given without a command are serve's: `ollama-proxy serve --help` lists them.
"""


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


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(text)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each command's own (whose `error` names the command in its usage)."""
    parser = argparse.ArgumentParser(
        prog="ollama-proxy", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A drop-in proxy in front of Ollama: per-request context sizing, routing across backends.")
    parser.add_argument("--version", action="version", version=f"ollama-proxy {__version__}")
    sub = parser.add_subparsers(dest="command",
                                metavar="{serve,status,simulate,demo,install-gnome-extension,install-service}")

    serve = sub.add_parser("serve", help="run the proxy (the default)", epilog=EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--config", help="YAML config file (or OLLAMA_PROXY_CONFIG)")
    _listen_flags(serve)
    serve.add_argument("--ollama-host", help="the upstream Ollama, written as OLLAMA_HOST is: host, host:port, "
                                             "[v6]:port or a URL (default 127.0.0.1:11434, or OLLAMA_BASE_URL)")
    serve.add_argument("--ollama-port", type=_port,
                       help="the upstream's port, keeping its host (default 11434)")

    status = sub.add_parser("status", help="show what a running proxy is doing: backends, mode, recent decisions")
    status.add_argument("--url", help="the proxy's URL (default OLLAMA_PROXY_URL, else where the config file "
                                      "says it listens, else http://127.0.0.1:11435)")
    status.add_argument("--config", help="YAML config file to find the proxy's port in (or OLLAMA_PROXY_CONFIG)")
    status.add_argument("--key", help="API key when the proxy has server.api_keys (or OLLAMA_PROXY_API_KEY)")
    status.add_argument("--json", action="store_true", help="print the status document as JSON, for scripts")
    status.add_argument("--recent", type=_count, default=10, help="how many recent decisions to show (default 10)")

    add_sim_arguments(sub.add_parser("simulate", help="run a simulated Ollama server"))

    demo = sub.add_parser("demo", help="four simulated backends (npu, igpu, nvidia, cpu) behind the proxy")
    _listen_flags(demo)
    demo.add_argument("--time-scale", type=float, default=0.5, help="multiplies every simulated delay")

    gnome = sub.add_parser("install-gnome-extension",
                           help="install the GNOME Shell 'AI Efficiency' Quick Settings toggle for this user")
    gnome.add_argument("--shell-version", help="the GNOME Shell version to install for (default: the running one)")
    gnome.add_argument("--print", action="store_true", help="show what would be installed, write nothing")

    service = sub.add_parser("install-service",
                             help=f"install the systemd user service {UNIT_NAME} and a config skeleton")
    service.add_argument("--print", action="store_true", help="show the unit and where it would go, write nothing")
    return parser, {"": parser, **sub.choices}


def _listen_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--proxy-port", type=_port, help="port to listen on (default 11435)")
    p.add_argument("--log-level", type=_log_level, help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    p.add_argument("--log-format", choices=("text", "json"), help="text (default) or json: one object per line")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "install-gnome-extension":
            return _install_gnome_extension(args)
        if args.command == "install-service":
            return _install_service(args)
        if args.command == "status":
            from ollama_proxy.adapters.cli.status_command import run_status

            return run_status(args.url or proxy_url(args.config),
                              key=args.key or os.environ.get("OLLAMA_PROXY_API_KEY"), as_json=args.json,
                              recent=args.recent, out=sys.stdout, err=sys.stderr, environ=os.environ)
        config = command_config(args)
    except ConfigError as exc:
        print(f"ollama-proxy: configuration error: {exc}", file=sys.stderr)
        return 2
    # Imported here: building the proxy's parts costs `status` and `--help` nearly half a second.
    from ollama_proxy.app import install_fast_loop, serve_forever

    configure_logging(config.log_level, config.server.log_format)
    install_fast_loop()
    if args.command == "demo":
        from ollama_proxy.demo import run_demo

        return _run(run_demo(config, time_scale=args.time_scale))
    from ollama_proxy.adapters.systemd.notify import ServiceNotifier

    # A reload (SIGHUP, POST /admin/reload) reads the file and the environment again; the flags still win.
    return _run(serve_forever(config, load=lambda: command_config(args),
                              notifier=ServiceNotifier.from_environ(os.environ)))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command and its flags; a bad or unknown flag exits 2 with argparse's message naming it."""
    argv = list(argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "serve")  # `ollama-proxy --proxy-port 8080` is `ollama-proxy serve --proxy-port 8080`
    parser, parsers = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _refuse_unknown(parsers[args.command or ""], unknown)
    return args


def command_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Config:
    """The configuration `serve` or `demo` runs with (ConfigError when it is not valid)."""
    flags = {"host": args.host, "proxy_port": args.proxy_port, "log_level": args.log_level,
             "log_format": args.log_format}
    if args.command == "demo":
        # Self-contained: no config file, no OLLAMA_BASE_URL; run_demo adds the simulated backends.
        return validate(with_listen_flags({}, flags))
    return load_config(args.config, environ=environ,
                       overrides={**flags, "ollama_host": args.ollama_host, "ollama_port": args.ollama_port})


def _refuse_unknown(parser: argparse.ArgumentParser, unknown: list[str]) -> None:
    """argparse's own error (exit 2), naming the flag and the nearest one that exists."""
    known = [option for action in parser._actions for option in action.option_strings]
    near = difflib.get_close_matches(unknown[0].split("=", 1)[0], known, n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")


def _simulate(args: argparse.Namespace) -> int:
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


def _install_gnome_extension(args: argparse.Namespace) -> int:
    from ollama_proxy.adapters.gnome.installer import InstallError, detect_shell_version, install

    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share")
    try:
        install(args.shell_version or detect_shell_version(), data_home / "gnome-shell/extensions", sys.stdout,
                dry_run=args.print)
    except InstallError as exc:
        print(f"ollama-proxy: {exc}", file=sys.stderr)
        return 2
    return 0


def _install_service(args: argparse.Namespace) -> int:
    from ollama_proxy.adapters.systemd.install import ServicePaths, install_service, proxy_command

    paths = ServicePaths.for_user(os.environ)
    command = proxy_command(paths.config, sys.argv[0], sys.executable)
    try:
        install_service(paths, command, sys.stdout, environ=os.environ, dry_run=args.print)
    except OSError as exc:
        print(f"ollama-proxy: cannot install the service: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(main: Coroutine[Any, Any, None]) -> int:
    """Run the proxy to its end: 0 after a signal stopped it, 1 with one line when it cannot listen."""
    try:
        asyncio.run(main)
    except ListenError as exc:
        print(f"ollama-proxy: {exc}", file=sys.stderr)
        return 1
    return 0
