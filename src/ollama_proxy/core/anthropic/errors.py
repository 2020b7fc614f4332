"""Anthropic-shaped errors: the body every `/v1/messages` error carries, and the exception that holds one.

Anthropic clients (the official SDKs included) pick their exception class from the HTTP status and read
`error.type` and `error.message` from the body; in a stream, an `error` event carries the same body.
Knows nothing about HTTP servers; it only shapes values.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ollama_proxy.core.openai.errors import OpenAIRequestError
from ollama_proxy.errors import BadRequest

# Anthropic's documented types by status. The proxy's own 5xx keep their status, and the SDK picks its
# exception class from the status alone (502 InternalServerError, 503 ServiceUnavailableError, 504
# GatewayTimeoutError, all retried), so the type only has to say the same thing in words: a 503 (no
# backend free, queue full) is what `overloaded_error` means, and the SDK's own error union reads
# `timeout_error` as its gateway-timeout error.
_TYPES_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type_for_status(status: int) -> str:
    """The Anthropic `error.type` for an HTTP status: other 4xx are `invalid_request_error` (as Anthropic
    documents), other 5xx `api_error`."""
    return _TYPES_BY_STATUS.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")


def anthropic_error(message: str, status: int) -> dict[str, Any]:
    """The body of an Anthropic error response, or of a stream's `error` event.

    >>> anthropic_error("no such model", 404)
    {'type': 'error', 'error': {'type': 'not_found_error', 'message': 'no such model'}}
    """
    return {"type": "error", "error": {"type": error_type_for_status(status), "message": message}}


class AnthropicRequestError(BadRequest):
    """An Anthropic request the proxy refuses; the message names the field.

    A `BadRequest` (and so a `ValueError`), so generic handlers still answer 4xx; the Anthropic front
    renders it with `anthropic_error`.
    """


@contextmanager
def as_anthropic_errors() -> Iterator[None]:
    """Re-raises the OpenAI-shaped refusals of the shared field readers (`core.openai.fields`) as
    Anthropic ones; their messages already name the field."""
    try:
        yield
    except OpenAIRequestError as exc:
        raise AnthropicRequestError(str(exc), exc.status) from exc
