"""One keep-alive HTTP/1.1 connection to a backend as an `asyncio.Protocol`, its responses parsed by llhttp
(`httptools.HttpResponseParser`) as the bytes arrive.

A connection carries one exchange at a time (no pipelining): `begin` it, write the request, await
`head()`, then `take()` the body pieces as they came (await `more()` when there are none yet), or have
what each read brought handed on as soon as it is parsed (`pipe_to`: a streamed reply then wakes no task
per piece). Body pieces are the parser's own bytes objects, handed over as they are. Reading pauses
while more than `_HIGH_WATER` bytes wait to be taken, or while the receiver of a piped body is full, so a
fast backend cannot fill memory ahead of a slow client.

Whether the connection may carry another exchange is only known inside the parser's callbacks
(`should_keep_alive()` means nothing after them), so it is noted there, in `keep_alive`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, ItemsView, Iterator, Mapping
from typing import Any, cast

import httptools

from ollama_proxy.adapters.upstream.shared import IdleWatch
from ollama_proxy.service.transport import Deliver

_HIGH_WATER = 256 * 1024
# Statuses that never have a body, whatever their headers say (RFC 9110 6.4.1).
_BODYLESS = frozenset((204, 304))


class ConnectionBroken(Exception):
    """The connection ended, or was ended, before the exchange did."""


class ClosedBeforeAnswer(ConnectionBroken):
    """The connection ended before a byte of the response arrived (a stale pooled one, typically)."""


class BadResponse(Exception):
    """What the backend sent is not HTTP/1.1."""


class HeadTimeout(Exception):
    """No response headers in time."""


class ResponseHeaders(Mapping[str, str]):
    """A response's headers: lookups are case-insensitive (the first of repeated names wins, as in
    multidict), `items()` gives every header as sent, repeats included."""

    __slots__ = ("_index", "_pairs")

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs
        self._index = {name.lower(): value for name, value in reversed(pairs)}

    def __getitem__(self, name: str) -> str:
        return self._index[name.lower()]

    def get(self, name: str, default: Any = None) -> Any:
        return self._index.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def items(self) -> ItemsView[str, str]:
        return _Pairs(self)

    def __repr__(self) -> str:
        return f"ResponseHeaders({self._pairs!r})"


class _Pairs(ItemsView[str, str]):
    _mapping: ResponseHeaders

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._mapping._pairs)


class Connection(asyncio.Protocol):
    """One connection and the exchange it carries; see the module docstring."""

    def __init__(self, on_lost: Callable[[Connection], None]) -> None:
        self._on_lost = on_lost
        # Kept: `asyncio.get_running_loop()` makes a getpid system call each time (CPython 3.11's fork check).
        self.loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._write_resumed: asyncio.Future[None] | None = None
        # The exchange under way (`begin` resets these).
        self._head: asyncio.Future[None] | None = None
        self._head_only = False
        self._head_done = False
        self._pairs: list[tuple[str, str]] = []
        self._pieces: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        # A piped body: who takes each piece, the reply's idle watch, and whether the taker said it is full.
        self._deliver: Deliver | None = None
        self._piped_watch: IdleWatch | None = None
        self.receiver_full = False
        self.received = False
        self.status = 0
        self.headers = ResponseHeaders([])
        self.content_length: int | None = None
        self.chunked = False
        self.complete = False
        self.keep_alive = False
        self.error: BaseException | None = None

    # --- the exchange, as the client drives it ----------------------------------------------------

    def begin(self, head_only: bool) -> None:
        """A new exchange on this connection (the last one, if any, ended complete)."""
        self._head = self.loop.create_future()
        self._head_only = head_only
        self._head_done = self.received = self.complete = self.keep_alive = self.chunked = False
        self.receiver_full = False
        self._deliver = self._piped_watch = None
        self._pairs = []
        self._pieces.clear()
        self._buffered = 0
        self.status = 0
        self.content_length = None
        self.error = None

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        assert self.transport is not None
        self.transport.writelines(parts)

    async def drain(self) -> None:
        """Wait while the kernel's send buffer is full; ConnectionBroken once the connection is gone."""
        if self.closed:
            raise ConnectionBroken(str(self.error or "connection closed while sending the request body"))
        if self._write_resumed is not None:
            await self._write_resumed

    def head(self) -> asyncio.Future[None]:
        """Done when the status line and headers of the final (non-1xx) response arrived."""
        assert self._head is not None
        return self._head

    def take(self) -> bytes | None:
        """The body that arrived since the last take (b"" at its end), or None: await `more()`.
        What arrived before the connection broke is taken before the break is raised."""
        pieces = self._pieces
        if pieces:
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            pieces.clear()
            self._buffered = 0
            if self._paused and self.transport is not None:
                self._paused = False
                self.transport.resume_reading()
            return data
        if self.complete:
            return b""
        if self.error is not None:
            raise self.error
        return None

    def more(self) -> asyncio.Future[None]:
        """Done when `take()` may have something new (or, piping, when the receiver is full)."""
        waiter = self._waiter = self.loop.create_future()
        return waiter

    def pipe_to(self, deliver: Deliver | None, watch: IdleWatch | None = None) -> None:
        """From now on (None: no longer) the body pieces each read brings go to `deliver` once it is
        parsed, counted as a read on `watch`; what arrived before, `take()` still has."""
        self._deliver, self._piped_watch = deliver, watch

    def receiver_drained(self) -> None:
        """The receiver of the piped body can take more again."""
        self.receiver_full = False
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def time_out_head(self) -> None:
        self.fail(HeadTimeout())

    def silence(self) -> None:
        """The body went silent for too long (the reply's idle watch says so)."""
        self.fail(ConnectionBroken("silent"))

    def fail(self, error: BaseException) -> None:
        """End the exchange with `error` (a timeout noticed outside) and close the connection."""
        if self.error is None:
            self.error = error
        self._wake(error)
        self.close()

    def end(self) -> None:
        """The exchange is over and the connection idles in the pool."""
        self._head = None
        self.idle_since = self.loop.time()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()  # so that a close by the backend is noticed while idle

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        if self._head is None:  # idle in the pool: nothing may arrive now
            self.fail(BadResponse(f"unexpected bytes on an idle connection: {data[:40]!r}"))
            return
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(BadResponse(str(exc) or type(exc).__name__))
            return
        deliver, pieces = self._deliver, self._pieces
        if deliver is not None and pieces:
            # A piped body: what this read brought goes on as one piece (one write to the client, as
            # nginx does), handed on here rather than in a method of its own: this runs for every chunk.
            piece = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            pieces.clear()
            if self._piped_watch is not None:
                self._piped_watch.reads += 1
            if not deliver(piece) and not self.receiver_full:
                self._receiver_filled()
        if self._head_only and self.complete:
            # The answer to a HEAD has no body whatever its headers announce; llhttp cannot be told
            # so from here, so the next exchange gets a fresh parser.
            self._parser = httptools.HttpResponseParser(self)

    def eof_received(self) -> bool:
        return False  # close: a half-closed backend connection is of no use

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        resumed, self._write_resumed = self._write_resumed, None
        if resumed is not None and not resumed.done():
            resumed.set_result(None)  # the writer then sees `closed`
        if self._head_done and not self.complete and self.error is None and self._until_close():
            self.complete = True  # a body delimited by the end of the connection ends with it
            self._wake(None)
        elif not self.complete and self.error is None:
            reason = f"{exc}" if exc is not None else "the backend closed the connection"
            self.error = ConnectionBroken(reason) if self.received else ClosedBeforeAnswer(reason)
            self._wake(self.error)
        self._on_lost(self)

    def pause_writing(self) -> None:
        if self._write_resumed is None:
            self._write_resumed = self.loop.create_future()

    def resume_writing(self) -> None:
        resumed, self._write_resumed = self._write_resumed, None
        if resumed is not None and not resumed.done():
            resumed.set_result(None)

    # --- httptools callbacks ------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._pairs.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self.complete:
            raise BadResponse("a response nobody asked for followed the last one")
        status = self._parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: the final answer is still to come
            self._pairs = []
            return
        self._head_done = True
        self.status = status
        self.headers = headers = ResponseHeaders(self._pairs)
        length = headers.get("content-length")
        self.content_length = int(length) if length is not None and length.isdigit() else None
        self.chunked = "chunked" in headers.get("transfer-encoding", "")
        self.keep_alive = self._parser.should_keep_alive()
        if self._head_only:
            self.complete = True
        head = self._head
        if head is not None and not head.done():
            head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._pieces.append(body)
        if self._deliver is not None:
            return  # handed on together once this read is parsed
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake(None)

    def on_message_complete(self) -> None:
        if not self._head_done:
            return  # the end of a 1xx interim response
        self.complete = True
        self.keep_alive = self.keep_alive and self._parser.should_keep_alive()
        self._head = None  # nothing more belongs to this exchange: bytes now are the backend's fault
        self._wake(None)

    # --- internals ------------------------------------------------------------------------------------

    def _receiver_filled(self) -> None:
        """The piped body's receiver is backed up: reading from the backend pauses until it drains."""
        self.receiver_full = True
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake(None)

    def _until_close(self) -> bool:
        return self.content_length is None and not self.chunked and self.status not in _BODYLESS

    def _wake(self, error: BaseException | None) -> None:
        head = self._head
        if head is not None and not head.done():
            if error is None:
                return
            head.set_exception(error)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
