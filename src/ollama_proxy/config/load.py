"""Build a validated `Config` from defaults < YAML file < environment < command-line flags.

The only module that reads the config file or the environment. Every failure becomes one
`ConfigError` whose message names the field, the value given and what is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import ValidationError

from ollama_proxy.config.schema import Config
from ollama_proxy.errors import ConfigError

DEFAULT_OLLAMA_PORT = 11434
DEFAULT_PROXY_PORT = 11435
# Addresses that mean "every interface" when listening; a client on the same machine uses loopback.
_WILDCARD_HOSTS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Merge and validate.

    `overrides` holds the flags the user actually gave: `host`, `proxy_port`, `ollama_host`,
    `ollama_port`, `log_level`, `log_format`. A flag left at None does not override anything.

    The single upstream: with no backends in the file, one backend `default` is made at
    127.0.0.1:11434. `OLLAMA_BASE_URL` replaces that endpoint, `--ollama-host` replaces it in turn
    (both written as `OLLAMA_HOST` is: host, host:port, [v6]:port or a URL) and `--ollama-port`
    replaces only the port of whatever is left, so a host from the environment stays. When the file
    lists backends, the same settings replace the endpoint of `router.default_backend`, or of the
    sole backend; with several backends and no default backend it is an error rather than a guess.
    """
    env = os.environ if environ is None else environ
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    path = path or env.get("OLLAMA_PROXY_CONFIG") or None
    data = with_listen_flags(_read_yaml(Path(path)) if path else {}, flags)
    _apply_upstream(data, env.get("OLLAMA_BASE_URL") or None, flags)
    return validate(data)


def with_listen_flags(data: dict[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """`data` with the flags every serving command takes (`host`, `proxy_port`, `log_level`,
    `log_format`) written into it; flags missing or None leave the file's values."""
    server = data.setdefault("server", {})
    if not isinstance(server, dict):
        raise ConfigError(f"server: expected a mapping, got {server!r}")
    for flag, key in (("host", "host"), ("proxy_port", "http_port"), ("log_format", "log_format")):
        if flags.get(flag) is not None:
            server[key] = flags[flag]
    if flags.get("log_level") is not None:
        data["log_level"] = str(flags["log_level"]).upper()
    return data


def proxy_url(path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None) -> str:
    """Where a proxy on this machine answers: `OLLAMA_PROXY_URL`, else the config file's (`path` or
    `OLLAMA_PROXY_CONFIG`) server.host and server.http_port, else http://127.0.0.1:11435."""
    env = os.environ if environ is None else environ
    if env.get("OLLAMA_PROXY_URL"):
        return ollama_url(env["OLLAMA_PROXY_URL"], "OLLAMA_PROXY_URL", default_port=DEFAULT_PROXY_PORT)
    path = path or env.get("OLLAMA_PROXY_CONFIG") or None
    server = validate(with_listen_flags(_read_yaml(Path(path)), {}) if path else {}).server
    return client_url(server.host, server.http_port)


def client_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a proxy listening on `host`:`port`."""
    return f"http://{_bracketed(_WILDCARD_HOSTS.get(host, host))}:{port}"


def ollama_url(text: str, source: str, *, default_port: int = DEFAULT_OLLAMA_PORT) -> str:
    """A base URL from an address written as `OLLAMA_HOST` is: `host`, `host:port`, `[v6]:port`,
    a bare IPv6 address, or a URL (whose port, when it names none, is its scheme's, as in a browser
    and in Ollama). `source` names the flag or variable in the error."""
    text = text.strip()
    scheme, has_scheme, rest = text.partition("://")
    if not has_scheme:
        scheme, rest = "http", text
    if scheme not in ("http", "https"):
        raise ConfigError(f"{source}: expected http or https, got {text!r}")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    host, port = _split_host_port(hostport, text, source)
    if port is None and not has_scheme:
        port = default_port
    netloc = userinfo + at + _bracketed(host or "127.0.0.1") + ("" if port is None else f":{port}")
    return f"{scheme}://{netloc}{slash}{path}"


def _split_host_port(hostport: str, text: str, source: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ConfigError(f"{source}: expected [IPv6]:port, got {text!r}")
        port_text = after[1:] or None
    elif hostport.count(":") > 1:  # a bare IPv6 address carries no port
        host, port_text = hostport, None
    else:
        host, colon, after = hostport.partition(":")
        port_text = after if colon else None
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{source}: expected host, host:port, [IPv6]:port or a URL with a port 1-65535, "
                          f"got {text!r}")
    return host, int(port_text)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    host = _bracketed(parts.hostname or "127.0.0.1")
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}:{port}"))


def _apply_upstream(data: dict[str, Any], base_url: str | None, flags: Mapping[str, Any]) -> None:
    """Write the single upstream (see `load_config`) into `data`'s backends."""
    backends = data.get("backends")
    if not backends:
        backends = data["backends"] = [{"id": "default", "type": "ollama", "name": "Ollama",
                                        "endpoint": f"http://127.0.0.1:{DEFAULT_OLLAMA_PORT}"}]
    if base_url is None and "ollama_host" not in flags and "ollama_port" not in flags:
        return
    target = _replaced_backend(data, backends, base_url, flags)
    if target is None:
        return  # the file's backends are malformed: validation names what is wrong with them
    endpoint = str(target.get("endpoint", ""))
    if base_url is not None:
        endpoint = ollama_url(base_url, "OLLAMA_BASE_URL")
    if "ollama_host" in flags:
        endpoint = ollama_url(str(flags["ollama_host"]), "--ollama-host")
    if "ollama_port" in flags:
        endpoint = _with_port(endpoint, int(flags["ollama_port"]))
    target["endpoint"] = endpoint


def _replaced_backend(data: dict[str, Any], listed: object, base_url: str | None,
                      flags: Mapping[str, Any]) -> dict[str, Any] | None:
    if not isinstance(listed, list) or not all(isinstance(b, dict) for b in listed):
        return None
    backends: list[dict[str, Any]] = listed
    router = data.get("router")
    default_id = router.get("default_backend") if isinstance(router, dict) else None
    if default_id is not None:
        return next((b for b in backends if b.get("id") == default_id), None)
    if len(backends) == 1:
        return backends[0]
    given = " and ".join(name for name, present in (("OLLAMA_BASE_URL", base_url is not None),
                                                    ("--ollama-host", "ollama_host" in flags),
                                                    ("--ollama-port", "ollama_port" in flags)) if present)
    ids = ", ".join(str(b.get("id")) for b in backends)
    raise ConfigError(f"{given} would replace the endpoint of one backend, but the config file lists "
                      f"{len(backends)} ({ids}) and no router.default_backend: set router.default_backend to "
                      f"the one to replace, or unset {given} (an empty OLLAMA_BASE_URL counts as unset)")


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
        # A validator's own message may already quote the value.
        shown = "" if err["type"] in ("extra_forbidden", "missing") or isinstance(given, dict) \
            or repr(given) in message else f" (got {given!r})"
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
