"""The proxy's error tree.

    OllamaProxyError
    ├── ConfigError(ValueError)          bad file, flag or environment value: exit status 2
    ├── ListenError                      the listen address is taken or not ours: exit status 1
    ├── BadRequest(ValueError)           the client sent something we refuse: 4xx
    │   └── PayloadTooLarge              body over server.max_body_bytes: 413
    ├── NoBackendAvailable               nothing can serve the request: 503 (or 400/404)
    └── UpstreamError                    a backend failed
        ├── UpstreamConnectError(ConnectionError)   could not reach it: 502
        └── UpstreamTimeout(TimeoutError)           it did not answer in time: 504

Each carries the HTTP status its adapters answer with, so one table serves HTTP, gRPC and D-Bus.
"""

from __future__ import annotations


class OllamaProxyError(Exception):
    status = 500


class ConfigError(OllamaProxyError, ValueError):
    """A configuration value is wrong; the message names the field, the value and what is allowed."""


class ListenError(OllamaProxyError):
    """The proxy (or a simulator) cannot bind its address; the message names it."""


class BadRequest(OllamaProxyError, ValueError):
    """The client's request cannot be served as sent."""

    status = 400

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class PayloadTooLarge(BadRequest):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the proxy's limit of {limit} bytes "
                         "(server.max_body_bytes)", 413)


class NoBackendAvailable(OllamaProxyError):
    """No configured backend can take the request; `reasons` says which constraint excluded which,
    `routing_reason` is the refusal's X-Routing-Reason (a token, then detail) when routing refused."""

    status = 503

    def __init__(self, message: str, reasons: dict[str, str] | None = None, status: int = 503,
                 retry_after_s: float | None = None, routing_reason: str | None = None) -> None:
        super().__init__(message)
        self.reasons = reasons or {}
        self.status = status
        self.retry_after_s = retry_after_s
        self.routing_reason = routing_reason


class UpstreamError(OllamaProxyError):
    status = 502

    def __init__(self, backend_id: str, message: str) -> None:
        super().__init__(f"backend {backend_id!r}: {message}")
        self.backend_id = backend_id


class UpstreamConnectError(UpstreamError, ConnectionError):
    status = 502


class UpstreamTimeout(UpstreamError, TimeoutError):
    status = 504
