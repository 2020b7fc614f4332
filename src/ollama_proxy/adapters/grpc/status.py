"""The proxy's refusals as gRPC statuses: an `OllamaProxyError`, or a reply the backend answered with an
error status, becomes a code, a message and trailing metadata.

One table from the HTTP status every error carries (`errors.py`) to the code Google's API design maps
it to, so HTTP and gRPC clients are told the same thing. A backend's 500 for a request no backend could
serve as sent (a wrong option type, an invalid format) is the client's fault: INVALID_ARGUMENT. A
refusal that says when to come back (a full queue, a wait that timed out) carries `retry-after-s` in
its trailing metadata, in seconds, as HTTP's Retry-After does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import orjson

from ollama_proxy.core.routing.breaker import Outcome, classify_status
from ollama_proxy.core.routing.headers import FIELD_HEADERS
from ollama_proxy.errors import NoBackendAvailable, OllamaProxyError

RETRY_AFTER_KEY = "retry-after-s"
_BY_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    # A backend that cannot be reached or broke off: worth retrying, as 503 is.
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


@dataclass(frozen=True, slots=True)
class RpcRefusal:
    """What `ServicerContext.abort` is called with, and the HTTP status the refusal stands for (what the
    request metrics count it under)."""

    code: grpc.StatusCode
    details: str
    status: int
    trailing_metadata: tuple[tuple[str, str], ...] = ()


def code_for_status(status: int, error_text: str = "") -> grpc.StatusCode:
    if status == 500 and classify_status(status, error_text) is Outcome.REQUEST_FAULT:
        return grpc.StatusCode.INVALID_ARGUMENT
    code = _BY_STATUS.get(status)
    if code is not None:
        return code
    if status < 500:
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL


def refusal_for_error(exc: OllamaProxyError) -> RpcRefusal:
    """The status for an error the pipeline raised; header names in its message become the
    annotation fields a gRPC client set."""
    details = _field_names(str(exc))
    retry_after_s = exc.retry_after_s if isinstance(exc, NoBackendAvailable) else None
    return RpcRefusal(code_for_status(exc.status, details), details, exc.status, _retry_metadata(retry_after_s))


def refusal_for_reply(status: int, answer: Any, retry_after: str | None = None) -> RpcRefusal:
    """The status for a reply whose status is an error (`answer`: its body as a native object, usually
    `{"error": "model 'x' not found"}`); `retry_after` is its Retry-After header, when it had one."""
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, str) and error:
        details = error
    elif isinstance(error, dict) and isinstance(error.get("message"), str):
        details = error["message"]
    else:
        details = f"the backend answered {status}: {orjson.dumps(answer).decode()[:300]}"
    try:
        retry_after_s = float(retry_after) if retry_after else None
    except ValueError:
        retry_after_s = None
    return RpcRefusal(code_for_status(status, details), details, status, _retry_metadata(retry_after_s))


def broken_stream(reason: str) -> RpcRefusal:
    """A stream that broke after tokens were sent: the call ends with an error status, never silently."""
    return RpcRefusal(grpc.StatusCode.UNAVAILABLE, f"the reply broke off: {reason}", 502)


def _retry_metadata(retry_after_s: float | None) -> tuple[tuple[str, str], ...]:
    return () if retry_after_s is None else ((RETRY_AFTER_KEY, f"{retry_after_s:g}"),)


def _field_names(message: str) -> str:
    for field, header in FIELD_HEADERS.items():
        message = message.replace(header, field)
    return message
