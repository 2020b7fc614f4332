"""Replies the proxy writes itself: JSON, and errors in the shape the client expects (Ollama's
`{"error": "..."}` on native paths, Anthropic's `{"type": "error", "error": {...}}` on `/v1/messages`,
OpenAI's `{"error": {"message", "type", ...}}` on the other `/v1` paths)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from ollama_proxy.core.anthropic import anthropic_error
from ollama_proxy.core.openai.errors import openai_error
from ollama_proxy.core.openai.sse import encode_event


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v1"


def is_anthropic_path(path: str) -> bool:
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def error_body(path: str, message: str, status: int, **extra: Any) -> dict[str, Any]:
    if is_anthropic_path(path):
        body = anthropic_error(message, status)
        body["error"].update(extra)
        return body
    if is_openai_path(path):
        body = openai_error(message, status)[1]
        body["error"].update(extra)
        return body
    return {"error": message, **extra}


def json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def error_response(path: str, message: str, status: int, *, headers: Mapping[str, str] | None = None,
                   retry_after_s: float | None = None, **extra: Any) -> web.Response:
    out = dict(headers or {})
    if retry_after_s is not None:
        out["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    return json_response(error_body(path, message, status, **extra), status=status, headers=out)


def stream_error_line(message: str, sse: bool, *, open_line: bool = False, path: str = "") -> bytes:
    """The last thing a failed stream says, so it never just stops; on a line of its own even when
    the stream broke in the middle of one (`open_line`). An SSE error also closes any event left
    open (extra blank lines are ignored by SSE readers; an NDJSON reader may choke on one)."""
    if sse:
        error = anthropic_error(message, 502) if is_anthropic_path(path) else openai_error(message, 502)[1]
        return (b"\n\n" if open_line else b"\n") + encode_event(error)
    return (b"\n" if open_line else b"") + orjson.dumps({"error": message}) + b"\n"
