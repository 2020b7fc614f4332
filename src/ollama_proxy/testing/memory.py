"""An in-memory `service.transport.Transport`, as httpx's MockTransport: the whole pipeline runs
against Python functions instead of backend sockets.

    def backend(request: MemoryRequest) -> MemoryResponse:
        return MemoryResponse.json({"models": []})

    transport = MemoryTransport({"gpu": backend})

A handler may also raise an `UpstreamError` (the backend could not be reached), and a response's
`chunks` may be an async iterator that raises one midway (the backend died mid-stream) or sleeps.
Every request is kept in `transport.requests` for tests to assert on.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from ollama_proxy.config.schema import BackendConfig, RouterConfig
from ollama_proxy.errors import UpstreamConnectError, UpstreamError
from ollama_proxy.service.transport import ERROR_BODY_LIMIT, Body, Deliver, Drain, Headers, pipe_by_reads


@dataclass(frozen=True, slots=True)
class MemoryRequest:
    backend_id: str
    method: str
    path: str
    query: str | None
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(slots=True)
class MemoryResponse:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: Iterable[bytes] | AsyncIterator[bytes] = ()
    chunked: bool = False

    @classmethod
    def json(cls, body: Any, status: int = 200) -> MemoryResponse:
        payload = orjson.dumps(body)
        return cls(status, {"Content-Type": "application/json; charset=utf-8",
                            "Content-Length": str(len(payload))}, [payload])

    @classmethod
    def ndjson(cls, lines: Iterable[dict[str, Any]] | AsyncIterator[bytes]) -> MemoryResponse:
        chunks = lines if isinstance(lines, AsyncIterator) else [orjson.dumps(line) + b"\n" for line in lines]
        return cls(200, {"Content-Type": "application/x-ndjson"}, chunks, chunked=True)


Handler = Callable[[MemoryRequest], MemoryResponse | Awaitable[MemoryResponse]]


class _Headers(dict[str, str]):
    """Case-insensitive lookups, as the transport port promises."""

    def __init__(self, items: Mapping[str, str]) -> None:
        super().__init__({k.lower(): v for k, v in items.items()})

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


class MemoryReply:
    def __init__(self, response: MemoryResponse) -> None:
        self.status = response.status
        self.headers = _Headers(response.headers)
        length = self.headers.get("content-length")
        self.content_length = int(length) if length is not None else None
        self._chunked = response.chunked
        chunks = response.chunks
        self._chunks: AsyncIterator[bytes] = chunks if isinstance(chunks, AsyncIterator) else _aiter(chunks)
        self._error_body: bytes | None = None
        self.forgotten = False

    @property
    def is_sse(self) -> bool:
        return "text/event-stream" in self.headers.get("content-type", "")

    @property
    def is_chunked(self) -> bool:
        return self._chunked

    async def readany(self) -> bytes:
        return await anext(self._chunks, b"")

    async def read(self, limit: int) -> bytes:
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        body = b"".join(parts)
        if len(body) > limit:
            raise UpstreamError("memory", f"reply exceeds {limit} bytes")
        return body

    async def read_error_body(self) -> bytes:
        if self._error_body is None:
            self._error_body = (await self.read(1 << 30))[:ERROR_BODY_LIMIT]
        return self._error_body

    async def pipe(self, deliver: Deliver, drain: Drain) -> None:
        await pipe_by_reads(self.readany, deliver, drain)

    def forget_connection(self) -> None:
        self.forgotten = True


async def _aiter(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


class MemoryClient:
    def __init__(self, backend_id: str, transport: MemoryTransport) -> None:
        self.backend_id = backend_id
        self._transport = transport

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def _answer(self, method: str, path: str, query: str | None, headers: Headers,
                      body: Body) -> MemoryResponse:
        data = body or b"" if body is None or isinstance(body, bytes) else b"".join([c async for c in body])
        request = MemoryRequest(self.backend_id, method, path, query, {k.lower(): v for k, v in headers}, data)
        self._transport.requests.append(request)
        handler = self._transport.handlers.get(self.backend_id)
        if handler is None:
            raise UpstreamConnectError(self.backend_id, "no handler: the backend is down")
        answer = handler(request)
        return await answer if inspect.isawaitable(answer) else answer

    @asynccontextmanager
    async def open(self, method: str, path: str, *, query: str | None = None, headers: Headers = (),
                   body: Body = None) -> AsyncIterator[MemoryReply]:
        yield MemoryReply(await self._answer(method, path, query, headers, body))

    async def get_json(self, path: str, *, timeout_s: float, method: str = "GET", body: Any = None) -> Any:
        response = await self._answer(method, path, None, (), None if body is None else orjson.dumps(body))
        reply = MemoryReply(response)
        payload = await reply.read(1 << 30)
        if reply.status >= 400:
            raise UpstreamError(self.backend_id, f"{method} {path} answered {reply.status}")
        return orjson.loads(payload)


class MemoryTransport:
    """Backends as handler functions, by backend id; a backend without one is down. Handlers may be
    changed at any time: each request looks its backend's up."""

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self.handlers = dict(handlers or {})
        self.requests: list[MemoryRequest] = []

    def client_for(self, backend: BackendConfig, router: RouterConfig) -> MemoryClient:
        return MemoryClient(backend.id, self)
