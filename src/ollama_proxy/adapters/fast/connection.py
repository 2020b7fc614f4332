"""One client connection of the fast engine: an `asyncio.Protocol` fed through llhttp (`httptools`).

Requests are answered one at a time, in order: one pipelined behind another waits (reading paused)
until the one before it has been answered. A request the fast front does not serve is handed, with
every byte received since it began, to aiohttp's connection handler, which owns the connection from
then on; that needs the request to begin where a read began (nothing else pipelined before it in the
same read), and one that does not is refused with a JSON 400 and the connection closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from ollama_proxy.adapters.fast import framing
from ollama_proxy.adapters.fast.answer import answer
from ollama_proxy.adapters.fast.request import Request, Upload
from ollama_proxy.errors import BadRequest

if TYPE_CHECKING:
    from ollama_proxy.adapters.fast.server import FastServer

log = logging.getLogger("ollama_proxy.edge")
# How long a connection answered before its request body arrived keeps reading (and dropping) it, so
# that closing it does not reset the answer away (aiohttp's lingering_time).
_LINGER_S = 10.0


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing what follows (a hand-over or a refusal)."""


class Connection(asyncio.Protocol):
    __slots__ = ("_active", "_began_at", "_between", "_chunks", "_clean", "_closing", "_completed_in_read",
                 "_connected_at", "_drained", "_hand_over", "_idle_since", "_parsing", "_reading_paused", "_timer",
                 "_waiting", "answered", "blocked", "loop", "parser", "server", "transport")

    def __init__(self, server: FastServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.answered = 0
        self._parsing: Request | None = None  # the request whose head or body is being read
        self._active: Request | None = None  # the request being answered
        self._waiting: deque[Request] = deque()  # pipelined behind it
        # The reads since the last message boundary a read began at (what a hand-over passes on), and
        # whether the message being read began at that boundary.
        self._chunks: list[bytes] = []
        self._clean = True
        self._between = True
        self._completed_in_read = False
        self._hand_over = False
        self._closing = False
        self._reading_paused = False
        self.blocked = False  # the transport's write buffer is full: the writer waits in `drain`
        self._drained: asyncio.Future[None] | None = None
        # One timer per connection, re-armed only when it fires (not per request): see `_watch`.
        self._timer: asyncio.TimerHandle | None = None
        self._connected_at = self._idle_since = self._began_at = loop.time()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        self.server.connections.add(self)
        self._timer = self.loop.call_at(self._connected_at + self.server.edge.header_timeout_s, self._watch)

    def data_received(self, data: bytes) -> None:
        if self._between:
            self._chunks = [data]
            self._clean = True
        elif self._parsing is not None and not self._parsing.head_done:
            self._chunks.append(data)
        self._completed_in_read = False
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserCallbackError, httptools.HttpParserUpgrade):
            if not self._hand_over and not self._closing:
                self._malformed("refused")
        except httptools.HttpParserError as exc:
            self._malformed(str(exc))
        if self._hand_over:
            if self._active is None and not self._waiting:
                self._give_to_aiohttp()
            else:
                self._pause_reading()  # handed over once the requests before it are answered
            return
        self._between = self._parsing is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None
        self._cancel_timer()
        for request in (self._active, *self._waiting, self._parsing):
            if request is not None:
                request.abandon()
        self._waiting.clear()
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(ConnectionResetError("the client went away"))

    def pause_writing(self) -> None:
        self.blocked = True

    def resume_writing(self) -> None:
        self.blocked = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        if self._completed_in_read:
            self._clean = False  # behind another request in the same read: no boundary to hand over at
        self._parsing = Request(self)
        if self.answered:
            self._began_at = self.loop.time()

    def on_url(self, url: bytes) -> None:
        assert self._parsing is not None
        self._parsing.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._parsing is not None
        self._parsing.header(name, value)

    def on_headers_complete(self) -> None:
        request = self._parsing
        assert request is not None
        parser = self.parser
        request.head_done = True
        if self._closing:
            raise _Stop  # after a request that closes the connection: not read
        request.method = parser.get_method().decode("ascii", "replace")
        request.keep_alive = parser.should_keep_alive()  # only valid inside a callback
        request.http10 = parser.get_http_version() == "1.0"
        if not framing.serves(bytes(request.target), parser.should_upgrade()):
            if self._clean:
                self._hand_over = True
                raise _Stop
            request.refusal = BadRequest("a request for the proxy's own endpoints or a protocol upgrade must not "
                                         "be pipelined behind another request: send it after the answer before it")
            request.keep_alive = False
        self._queue(request)
        if not request.keep_alive:
            self._closing = True
            if request.refusal is not None:
                request.finish()  # nothing after its head is read: the connection closes after the refusal
                raise _Stop

    def on_body(self, body: bytes) -> None:
        assert self._parsing is not None
        self._parsing.feed(body)

    def on_message_complete(self) -> None:
        request = self._parsing
        assert request is not None
        self._parsing = None
        self._completed_in_read = True
        request.finish()
        if self._closing and self.transport is not None and self._active is None:
            self.transport.close()  # the body of an answered request, read to the end: now the close

    # -- answering

    def _queue(self, request: Request) -> None:
        if self._active is None:
            self._start(request)
        else:
            self._waiting.append(request)
            self._pause_reading()

    def _start(self, request: Request) -> None:
        self._active = request
        request.task = self.loop.create_task(answer(self.server, self, request))

    def answer_done(self, request: Request) -> None:
        """Called by the answering task when its answer has been written."""
        self._active = None
        self.answered += 1
        transport = self.transport
        if transport is None:
            return
        if self._waiting and request.keep_alive:
            self._start(self._waiting.popleft())
            if not self._waiting:
                self._resume_reading()
        elif not request.keep_alive or self._closing:
            self._closing = True
            if request.complete:
                transport.close()
            else:
                request.drop()
                self._resume_reading()
                self._cancel_timer()
                self._timer = self.loop.call_later(_LINGER_S, transport.close)
        elif self._hand_over:
            self._give_to_aiohttp()
        else:
            self._idle_since = self.loop.time()

    def keep_alive(self, request: Request) -> bool:
        """Whether the answer being written says the connection stays open (and so whether it does)."""
        request.keep_alive = request.keep_alive and request.complete and not (self._closing and not self._waiting)
        return request.keep_alive

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while `blocked` (the client reads slower than the answer is written)."""
        while self.blocked:
            self._drained = self.loop.create_future()
            await self._drained
        if self.transport is None:
            raise ConnectionResetError("the client went away")

    def continue_body(self, request: Request) -> None:
        """Send `100 Continue` when the client waits for it before its body."""
        if request.expect_continue and not request.continued and not request.complete:
            request.continued = True
            self.write(framing.CONTINUE)

    def upload(self, request: Request) -> Upload:
        self.continue_body(request)
        return request.stream()

    def pause_body(self) -> None:
        self._pause_reading()

    def resume_body(self) -> None:
        if not self._waiting and not self._hand_over:
            self._resume_reading()

    # -- the connection's end

    def close_when_idle(self) -> None:
        """Close now when nothing is being answered, else after the answer (a shutdown's drain)."""
        self._closing = True
        if self._active is None and self.transport is not None:
            self.transport.close()

    def cut(self) -> None:
        for request in (self._active, *self._waiting):
            if request is not None and request.task is not None:
                request.task.cancel()
        if self.transport is not None:
            self.transport.close()

    def _watch(self) -> None:
        """The connection's deadlines: the first request's headers within header_timeout_s of connecting
        (slowloris), a later request's within header_timeout_s of its first byte, and the next request
        within keepalive_timeout_s of an answer. Past one, the connection is closed without an answer."""
        self._timer = None
        transport = self.transport
        if transport is None or self._closing:
            return
        edge, now, parsing = self.server.edge, self.loop.time(), self._parsing
        if self._active is not None or self._waiting or (parsing is not None and parsing.head_done):
            deadline = now + edge.header_timeout_s  # busy: look again later
        elif parsing is not None:
            deadline = (self._began_at if self.answered else self._connected_at) + edge.header_timeout_s
        elif self.answered:
            deadline = self._idle_since + edge.keepalive_timeout_s
        else:
            deadline = self._connected_at + edge.header_timeout_s
        if now >= deadline:
            transport.close()
        else:
            self._timer = self.loop.call_at(deadline, self._watch)

    def _malformed(self, why: str) -> None:
        """What llhttp refused: handed to aiohttp at a boundary (its JSON answer), else closed after
        the answers before it."""
        if self._clean and self._active is None and not self._waiting and (
                self._parsing is None or not self._parsing.head_done):
            self._hand_over = True
            return
        log.warning("refused a malformed HTTP request: %s", why)
        self._closing = True
        if self._parsing is not None and self._parsing.head_done:
            # Its body broke off (bad chunk framing): the request being answered says so in JSON.
            self._parsing.fail(BadRequest(f"malformed HTTP request body: {why}"))
            self._parsing = None
        if self._active is None and self.transport is not None:
            self.transport.close()

    def _give_to_aiohttp(self) -> None:
        transport = self.transport
        if transport is None:
            return
        self._cancel_timer()
        self.server.connections.discard(self)
        self.transport = None
        self._resume_reading_of(transport)
        self.server.hand_over(transport, b"".join(self._chunks))
        self._chunks = []

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._resume_reading_of(self.transport)

    def _resume_reading_of(self, transport: asyncio.Transport) -> None:
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
