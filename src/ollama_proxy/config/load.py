"""Build a validated `Config` from defaults < YAML file < environment < command-line flags.

The only module that reads the config file or the environment. Every failure becomes one
`ConfigError` whose message names the field, the value given and what is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from ollama_proxy.config.schema import Config
from ollama_proxy.errors import ConfigError

DEFAULT_OLLAMA_PORT = 11434


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Merge and validate.

    `overrides` holds the flags the user actually gave: `host`, `proxy_port`, `ollama_host`,
    `ollama_port`, `log_level`. A flag left at None does not override anything.
    """
    env = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    path = path or env.get("OLLAMA_PROXY_CONFIG") or None
    data = _read_yaml(Path(path)) if path else {}

    server = data.setdefault("server", {})
    if not isinstance(server, dict):
        raise ConfigError(f"server: expected a mapping, got {server!r}")
    if "host" in overrides:
        server["host"] = overrides["host"]
    if "proxy_port" in overrides:
        server["http_port"] = overrides["proxy_port"]
    if "log_level" in overrides:
        data["log_level"] = str(overrides["log_level"]).upper()

    upstream = _upstream_url(env, overrides)
    if not data.get("backends"):
        data["backends"] = [{"id": "default", "type": "ollama", "name": "Ollama",
                             "endpoint": upstream or f"http://127.0.0.1:{DEFAULT_OLLAMA_PORT}"}]
    elif upstream is not None:
        # An explicit upstream flag or OLLAMA_BASE_URL with a multi-backend file is ambiguous:
        # say so instead of silently preferring one.
        raise ConfigError("--ollama-host/--ollama-port/OLLAMA_BASE_URL cannot be combined with a config "
                          "file that lists backends; edit the file's backends instead")
    return validate(data)


def validate(data: Mapping[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from exc


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = _dotted(err["loc"]) or "config"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see the README's config reference)"
        given = err.get("input")
        shown = "" if err["type"] in ("extra_forbidden", "missing") or isinstance(given, dict) \
            else f" (got {given!r})"
        lines.append(f"{where}: {message}{shown}")
    return "; ".join(lines)


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r}: cannot read it ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {str(path)!r}: YAML syntax error{where}: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping at the top level, "
                          f"got {type(data).__name__}")
    return data


def _upstream_url(env: Mapping[str, str], flags: Mapping[str, Any]) -> str | None:
    """The single-upstream URL from flags (winning) or OLLAMA_BASE_URL, or None if neither says."""
    if "ollama_host" in flags or "ollama_port" in flags:
        host = str(flags.get("ollama_host", "127.0.0.1"))
        port = int(flags.get("ollama_port", DEFAULT_OLLAMA_PORT))
        if "://" in host:
            parts = urlsplit(host)
            scheme, host = parts.scheme, parts.hostname or ""
            port = parts.port or port
        else:
            scheme = "http"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{scheme}://{host}:{port}"
    base = env.get("OLLAMA_BASE_URL")
    if base:
        return base if "://" in base else f"http://{base}"
    return None
