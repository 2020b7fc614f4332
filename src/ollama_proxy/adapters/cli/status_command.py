"""`ollama-proxy status`: read `GET /status` from a running proxy and print it (a table, or `--json`).

A proxy that cannot be read is one line on stderr and exit status 1.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import urlsplit

from ollama_proxy.adapters.cli.status_table import render_status

TIMEOUT_S = 5.0


class StatusUnavailable(Exception):
    """The proxy could not be read; the message says why in one line."""


def fetch_status(url: str, *, key: str | None = None, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    if urlsplit(url).scheme not in ("http", "https"):
        raise StatusUnavailable(f"expected an http(s) URL such as http://127.0.0.1:11435, got {url!r}")
    request = urllib.request.Request(url.rstrip("/") + "/status", headers={"Accept": "application/json"})
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise StatusUnavailable(_refusal(url, exc.code, exc.read(), key)) from None
    except urllib.error.URLError as exc:
        raise StatusUnavailable(_unreachable(url, exc.reason)) from None
    except TimeoutError:
        raise StatusUnavailable(f"{url} did not answer within {timeout_s:g} s") from None
    except ValueError as exc:  # an http URL that does not parse, such as a bad port
        raise StatusUnavailable(f"{url!r}: {exc}") from None
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or "backends" not in doc:
        raise StatusUnavailable(f"{url}/status is not an ollama-proxy status document: is {url} the proxy?")
    return doc


def _unreachable(url: str, reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return f"no proxy is running at {url} (connection refused); start one with `ollama-proxy`, or pass --url"
    if isinstance(reason, TimeoutError):
        return f"{url} did not answer within {TIMEOUT_S:g} s"
    return f"cannot reach {url}: {getattr(reason, 'strerror', None) or reason}"


def _refusal(url: str, status: int, body: bytes, key: str | None) -> str:
    if status == 401:
        return (f"{url} refused the API key" if key else
                f"{url} wants an API key: pass --key or set OLLAMA_PROXY_API_KEY")
    if status == 404:
        return f"{url} has no /status: is it an ollama-proxy (and not Ollama itself)?"
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        message = None
    return f"{url}/status answered {status}" + (f": {message}" if message else "")


def wants_colour(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Colour for a terminal only, and never with NO_COLOR set (no-color.org) or TERM=dumb."""
    return stream.isatty() and not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"


def run_status(url: str, *, key: str | None, as_json: bool, recent: int, out: TextIO, err: TextIO,
               environ: Mapping[str, str]) -> int:
    try:
        doc = fetch_status(url, key=key)
    except StatusUnavailable as exc:
        print(f"ollama-proxy status: {exc}", file=err)
        return 1
    if as_json:
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        out.write(render_status(doc, url=url, colour=wants_colour(out, environ), recent=recent))
    out.flush()
    return 0
