"""What the WebSocket front says back, as JSON text frames: a token, a request's final message, an error.

Tokens are the hot path: each request's frame prefix (`{"request_id":"...","token":`) is encoded once,
so a token costs one `orjson.dumps` of its text.
"""

from __future__ import annotations

from typing import Any

import orjson

from ollama_proxy.core.operations import Operation
from ollama_proxy.errors import NoBackendAvailable, OllamaProxyError
from ollama_proxy.service.reply import CallRecord


class Answers:
    """The frames of one request's answer; the first one sent carries `ttft_ms`."""

    __slots__ = ("_id_field", "_started", "_token_prefix", "request_id", "sent_first")

    def __init__(self, request_id: str, started: float) -> None:
        self.request_id = request_id
        self._started = started
        self._id_field = orjson.dumps(request_id)
        self._token_prefix = b'{"request_id":' + self._id_field + b',"token":'
        self.sent_first = False

    def token(self, text: str, now: float) -> bytes:
        if self.sent_first:
            return self._token_prefix + orjson.dumps(text) + b"}"
        self.sent_first = True
        return orjson.dumps({"request_id": self.request_id, "token": text, "ttft_ms": self._ms(now)})

    def final(self, record: CallRecord, native: dict[str, Any], num_ctx: int | None, now: float) -> bytes:
        message: dict[str, Any] = {
            "request_id": self.request_id, "done": True, "backend": record.backend_id,
            "routing_reason": record.routing.reason if record.routing is not None else None,
            "prompt_eval_count": native.get("prompt_eval_count"), "eval_count": native.get("eval_count"),
            "total_ms": self._ms(now), "num_ctx": num_ctx, "done_reason": native.get("done_reason")}
        if record.truncated is not None:
            message["context_truncated"] = record.truncated
        return self._first_carries_ttft(message, now)

    def cancelled(self, now: float) -> bytes:
        return self._first_carries_ttft({"request_id": self.request_id, "done": True, "cancelled": True,
                                         "total_ms": self._ms(now)}, now)

    def error(self, message: str, status: int, **extra: Any) -> bytes:
        return error_frame(self.request_id, message, status, **extra)

    def refused(self, exc: OllamaProxyError) -> bytes:
        """An error the pipeline raised, with what HTTP would say in its body and headers."""
        extra: dict[str, Any] = {}
        if isinstance(exc, NoBackendAvailable):
            if exc.reasons:
                extra["excluded"] = exc.reasons
            if exc.retry_after_s is not None:
                extra["retry_after_s"] = exc.retry_after_s
        return self.error(str(exc), exc.status, **extra)

    def _first_carries_ttft(self, message: dict[str, Any], now: float) -> bytes:
        if not self.sent_first:
            self.sent_first = True
            message["ttft_ms"] = self._ms(now)
        return orjson.dumps(message)

    def _ms(self, now: float) -> float:
        return round((now - self._started) * 1000, 3)


def error_frame(request_id: str | None, message: str, status: int, **extra: Any) -> bytes:
    """`{"request_id", "error", "status"}`: `status` is the HTTP status the same refusal has there."""
    head: dict[str, Any] = {"request_id": request_id} if request_id is not None else {}
    return orjson.dumps({**head, "error": message, "status": status, **extra})


def token_of(native: dict[str, Any], operation: Operation) -> str | None:
    """The text one native reply object adds: `response` of a generate, `message.content` of a chat."""
    if operation is Operation.CHAT:
        message = native.get("message")
        text = message.get("content") if isinstance(message, dict) else None
    else:
        text = native.get("response")
    return text if isinstance(text, str) else None
