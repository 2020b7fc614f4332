"""The upstream as a port: what the pipeline and the pool need from a connection to a backend.

An implementation is the only place that knows an HTTP client library: `adapters.upstream` has the
aiohttp one, `ollama_proxy.testing.memory` an in-memory one for tests (as httpx's MockTransport).
Whatever goes wrong while sending, waiting for the answer or reading its body reaches the caller
as an `ollama_proxy.errors.UpstreamError` (`UpstreamConnectError`, `UpstreamTimeout`), never as
the library's own exception.

Paths handed to a client are origin-form (`core.ollama_api.normalized_path`): one leading slash,
joined to the backend's configured origin, so no request can name another server.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from ollama_proxy.config.schema import BackendConfig, RouterConfig

Headers = Sequence[tuple[str, str]]
# An error body is read to explain or classify the failure, never relayed in bulk: this much of it
# is kept and the rest is dropped with the connection.
ERROR_BODY_LIMIT = 32 * 1024
# What may be sent as a request body: bytes in memory (which may be sent again on a fresh
# connection), a stream read once (a blob upload), or nothing.
Body = bytes | AsyncIterable[bytes] | None
# Takes one piece of a piped body; False when the receiver is full (the pipe then awaits `Drain`).
Deliver = Callable[[bytes], bool]
Drain = Callable[[], Awaitable[None]]


class UpstreamReply(Protocol):
    """A backend's answer once its status line and headers arrived."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Lookups are case-insensitive."""

    @property
    def content_length(self) -> int | None: ...

    @property
    def is_sse(self) -> bool: ...

    @property
    def is_chunked(self) -> bool: ...

    async def readany(self) -> bytes:
        """The next piece of the body as it arrived; b"" at its end."""

    async def read(self, limit: int) -> bytes:
        """The whole body; an UpstreamError past `limit` bytes."""

    async def read_error_body(self) -> bytes:
        """At most a few tens of KB of an error body, read once and remembered."""

    async def pipe(self, deliver: Deliver, drain: Drain) -> None:
        """The rest of the body, each piece handed to `deliver` as it arrives (from the connection's
        own callback where the client can: no task wakes up per piece); returns at its end. While
        `deliver` says it is full, nothing more is read until `drain` returns."""

    def forget_connection(self) -> None:
        """Keep the connection behind this reply out of the pool (it ended in a bad state)."""


class BackendClient(Protocol):
    """Pooled connections to one backend."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def open(self, method: str, path: str, *, query: str | None = None, headers: Headers = (),
             body: Body = None) -> AbstractAsyncContextManager[UpstreamReply]:
        """Send a request; the context yields the reply once its headers arrived and releases it."""

    async def get_json(self, path: str, *, timeout_s: float, method: str = "GET", body: Any = None) -> Any:
        """A small control-plane call (health, tags, ps, show) with its own overall timeout."""


class Transport(Protocol):
    """Makes the client for each configured backend."""

    def client_for(self, backend: BackendConfig, router: RouterConfig) -> BackendClient: ...


async def pipe_by_reads(readany: Callable[[], Awaitable[bytes]], deliver: Deliver, drain: Drain) -> None:
    """`UpstreamReply.pipe` for a client that can only be read: one `readany` per piece."""
    while data := await readany():
        if not deliver(data):
            await drain()
