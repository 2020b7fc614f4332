"""Error responses in the shape the client expects: Ollama's `{"error": "..."}` on native
paths, OpenAI's `{"error": {"message", "type", ...}}` on `/v1` paths."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error"}


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/")


def error_body(path: str, message: str, status: int, **extra: Any) -> dict[str, Any]:
    if is_openai_path(path):
        return {"error": {"message": message, "type": _OPENAI_TYPES.get(status, "api_error"),
                          "param": None, "code": extra.pop("code", None), **extra}}
    return {"error": message, **extra}


def error_response(path: str, message: str, status: int, *, headers: Mapping[str, str] | None = None,
                   retry_after_s: float | None = None, **extra: Any) -> web.Response:
    out = dict(headers or {})
    if retry_after_s is not None:
        out["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    return web.Response(status=status, body=orjson.dumps(error_body(path, message, status, **extra)),
                        content_type="application/json", headers=out)


def stream_error_line(message: str, sse: bool) -> bytes:
    """The last thing a failed stream says, so it never just stops."""
    if sse:
        return b"data: " + orjson.dumps({"error": {"message": message, "type": "api_error",
                                                   "param": None, "code": None}}) + b"\n\n"
    return orjson.dumps({"error": message}) + b"\n"
