"""One request as the fast front's parser callbacks fill it in: the head (with the few headers a
decision reads noted on the way), then the body, kept whole for a JSON operation or streamed on as
it arrives (a blob upload)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from ollama_proxy.adapters.http.calls import ROUTE_HEADERS_LOWER
from ollama_proxy.errors import BadRequest, PayloadTooLarge

if TYPE_CHECKING:
    from ollama_proxy.adapters.fast.connection import Connection

# A streamed upload buffers at most about this much before reading from the client pauses.
_UPLOAD_HIGH = 1 << 20
_UPLOAD_LOW = 1 << 18


class Request:
    __slots__ = ("_dropped", "_error", "_parts", "_size", "_upload", "_waiter", "authorization", "chunked",
                 "complete", "conn", "content_length", "continued", "expect_continue", "head_done", "headers", "http10",
                 "keep_alive", "method", "origin", "preflight", "refusal", "request_id", "routing", "target", "task",
                 "x_api_key")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.target = bytearray()
        self.headers: list[tuple[str, str]] = []
        self.routing: dict[str, str] = {}
        self.method = "GET"
        self.keep_alive = True
        self.http10 = False
        self.head_done = False
        self.complete = False
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.continued = False
        self.preflight = False
        # First of repeated headers, as aiohttp's `headers.get` reads them.
        self.origin: str | None = None
        self.request_id: str | None = None
        self.x_api_key: str | None = None
        self.authorization: str | None = None
        self.refusal: BadRequest | None = None
        self.task: asyncio.Task[None] | None = None
        self._parts: list[bytes] = []
        self._size = 0
        self._dropped = False
        self._error: BaseException | None = None
        self._upload: Upload | None = None
        self._waiter: asyncio.Future[None] | None = None

    def header(self, raw_name: bytes, raw_value: bytes) -> None:
        # As aiohttp decodes them: bytes that are not UTF-8 are kept as surrogate escapes.
        name = raw_name.decode("utf-8", "surrogateescape")
        value = raw_value.decode("utf-8", "surrogateescape")
        self.headers.append((name, value))
        key = name.lower()
        if key in _NOTED:
            _NOTED[key](self, value)
        elif key in ROUTE_HEADERS_LOWER:
            self.routing[ROUTE_HEADERS_LOWER[key]] = value  # the last wins, as routing reads them

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    # -- the body, as the parser delivers it

    def feed(self, data: bytes) -> None:
        if self._upload is not None:
            self._upload.feed(data)
            return
        if self._dropped:
            return
        self._size += len(data)
        self._parts.append(data)
        self._wake()

    def finish(self) -> None:
        self.complete = True
        if self._upload is not None:
            self._upload.finish()
        self._wake()

    def fail(self, exc: BaseException) -> None:
        """The body cannot be read to its end (`exc` says why): whatever waits for it gets `exc`."""
        self.complete = True  # nothing more of it will be read
        self._error = exc
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self._upload is not None:
            self._upload.fail(exc)

    def abandon(self) -> None:
        """The connection is gone: whatever waits for this request's body or answer stops."""
        self.fail(ConnectionResetError("the client went away"))
        if self.task is not None:
            self.task.cancel()

    # -- the body, as the front reads it

    async def body(self, limit: int, idle_timeout_s: float) -> bytes:
        """The whole body: PayloadTooLarge past `limit`, a 408 after `idle_timeout_s` without a byte."""
        self.conn.continue_body(self)
        while not self.complete and self._size <= limit:
            self._waiter = self.conn.loop.create_future()
            try:
                async with asyncio.timeout(idle_timeout_s):
                    await self._waiter
            except TimeoutError:
                raise BadRequest(f"the request body stopped arriving for {idle_timeout_s:g} s "
                                 "(server.header_timeout_s)", 408) from None
            finally:
                self._waiter = None
        if self._error is not None:
            raise self._error
        if self._size > limit:
            self.drop()
            raise PayloadTooLarge(limit)
        return self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)

    def stream(self) -> Upload:
        """The body as it arrives (what came already first), read once."""
        self._upload = Upload(self.conn, self._parts, done=self.complete, error=self._error)
        self._parts = []
        return self._upload

    def drop(self) -> None:
        """What is still to come of the body is read and dropped (it was answered without it)."""
        self._dropped = True
        self._parts = []
        self._upload = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _content_length(request: Request, value: str) -> None:
    # llhttp refuses a malformed or conflicting length before the head completes.
    request.content_length = int(value) if value.strip().isdigit() else None


def _transfer_encoding(request: Request, value: str) -> None:
    request.chunked = request.chunked or "chunked" in value.lower()


def _expect(request: Request, value: str) -> None:
    request.expect_continue = value.strip().lower() == "100-continue"


def _origin(request: Request, value: str) -> None:
    if request.origin is None:
        request.origin = value


def _preflight(request: Request, value: str) -> None:
    request.preflight = True


def _request_id(request: Request, value: str) -> None:
    if request.request_id is None:
        request.request_id = value


def _api_key(request: Request, value: str) -> None:
    if request.x_api_key is None:
        request.x_api_key = value


def _authorization(request: Request, value: str) -> None:
    if request.authorization is None:
        request.authorization = value


_NOTED = {"content-length": _content_length, "transfer-encoding": _transfer_encoding, "expect": _expect,
          "origin": _origin, "access-control-request-method": _preflight, "x-request-id": _request_id,
          "x-api-key": _api_key, "authorization": _authorization}


class Upload:
    """A streamed request body for the pipeline to send on; reading pauses while it is backed up."""

    __slots__ = ("_conn", "_done", "_error", "_parts", "_size", "_waiter")

    def __init__(self, conn: Connection, parts: list[bytes], *, done: bool, error: BaseException | None) -> None:
        self._conn = conn
        self._parts = deque(parts)
        self._size = sum(map(len, parts))
        self._done = done
        self._error = error
        self._waiter: asyncio.Future[None] | None = None

    def feed(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        if self._size > _UPLOAD_HIGH:
            self._conn.pause_body()
        self._wake()

    def finish(self) -> None:
        self._done = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        self._wake()

    def __aiter__(self) -> Upload:
        return self

    async def __anext__(self) -> bytes:
        while not self._parts:
            if self._error is not None:
                raise self._error
            if self._done:
                raise StopAsyncIteration
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._parts.popleft()
        self._size -= len(data)
        if self._size < _UPLOAD_LOW:
            self._conn.resume_body()
        return data

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
