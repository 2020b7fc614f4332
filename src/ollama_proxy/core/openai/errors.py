"""OpenAI-shaped errors: the body every `/v1` error carries, and the exception that holds one.

Clients of the OpenAI API (the official SDKs included) read `error.message` and `error.type`
from the body and pick their exception class from the HTTP status, so every error the proxy
itself produces on `/v1` goes through `openai_error`. This module knows nothing about HTTP
servers; it only shapes values.
"""

from __future__ import annotations

from typing import Any

from ollama_proxy.errors import BadRequest

# The types OpenAI uses; Ollama's own /v1 layer only knows 400/404/else (reference 6.5), but the
# SDKs also understand these, so a 401 or 429 from the proxy reads naturally.
_TYPES_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type_for_status(status: int) -> str:
    """The OpenAI `error.type` for an HTTP status (`api_error` for anything unlisted)."""
    return _TYPES_BY_STATUS.get(status, "api_error")


def openai_error(message: str, status: int, *, param: str | None = None,
                 code: str | None = None) -> tuple[int, dict[str, Any]]:
    """Return `(status, body)` for an OpenAI-shaped error response.

    >>> openai_error("no such model", 404)[1]["error"]["type"]
    'not_found_error'
    """
    return status, {"error": {"message": message, "type": error_type_for_status(status),
                              "param": param, "code": code}}


class OpenAIRequestError(BadRequest):
    """An OpenAI request the proxy refuses; carries the status and the offending parameter.

    It is a `BadRequest` (and so a `ValueError`), so generic handlers still answer 4xx; the `/v1`
    handler uses `.response()` to answer in OpenAI's shape instead of Ollama's.
    """

    def __init__(self, message: str, *, param: str | None = None, status: int = 400,
                 code: str | None = None) -> None:
        super().__init__(message, status)
        self.param = param
        self.code = code

    def response(self) -> tuple[int, dict[str, Any]]:
        return openai_error(str(self), self.status, param=self.param, code=self.code)


class BackendReplyError(ValueError):
    """An OpenAI-type backend answered with something that cannot be translated (a 502 for the client)."""
