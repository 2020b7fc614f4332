"""The `service.transport` port over raw pooled connections (`raw_connection`): request bytes written
directly, responses parsed by llhttp, no HTTP client library on the request path.

The request line and the headers that are the same for every request to a backend (`Host`, its own
`Authorization`) are built once per method and path; the client's headers and the body framing
(`Content-Length`, or chunked for a streamed body of unknown length) follow. Only plain `http://`
backends are served this way: `RawTransport` hands `https://` ones to the aiohttp client (TLS
verification, SNI and session reuse stay with the library that has them right), and says so in the log.

Connections are kept per backend, most recently used first. One goes back to the pool only when its
response was read to the end, the backend did not say `Connection: close` and nobody called
`forget_connection()`. A pooled connection the backend closed while it idled fails before any byte
of an answer arrives: a request whose body is in memory is then sent once more on a fresh connection.

Timeouts as the aiohttp client applies them: `router.connect_timeout_s` for connecting,
`router.first_byte_timeout_s` from sending to the response headers, `router.idle_timeout_s` for
silence in the middle of a body. Every failure reaches the caller as an `UpstreamError` worded by
`shared.Failures`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from ollama_proxy.adapters.upstream.aiohttp_client import AiohttpTransport
from ollama_proxy.adapters.upstream.raw_connection import (
    BadResponse,
    ClosedBeforeAnswer,
    Connection,
    ConnectionBroken,
    HeadTimeout,
    ResponseHeaders,
)
from ollama_proxy.adapters.upstream.shared import BodyReads, Failures, IdleWatch, json_answer
from ollama_proxy.config.schema import BackendConfig, RouterConfig
from ollama_proxy.errors import UpstreamError
from ollama_proxy.service.transport import BackendClient, Body, Deliver, Drain, Headers

log = logging.getLogger(__name__)

# An idle pooled connection older than this is closed rather than reused (aiohttp's keepalive_timeout).
KEEPALIVE_S = 60.0
# A control-plane answer (`/api/show` with a tokenizer's vocabulary is the largest) is read whole up to this.
_CONTROL_REPLY_LIMIT = 256 * 1024 * 1024
# A body in memory up to this size goes out in one write with its headers; a larger one in two.
_COPY_LIMIT = 64 * 1024
_HEAD_CACHE_SIZE = 256
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/._~:@!$&'()*+,;=-]*")
_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))


class RawTransport:
    """Makes a raw client per `http://` backend, an aiohttp one per `https://` backend."""

    def __init__(self) -> None:
        self._tls = AiohttpTransport()

    def client_for(self, backend: BackendConfig, router: RouterConfig) -> BackendClient:
        if backend.endpoint.startswith("https:"):
            log.info("backend %s (%s): https, so reached through the aiohttp client (the raw client speaks "
                     "plain http)", backend.id, backend.endpoint)
            return self._tls.client_for(backend, router)
        return RawBackendClient(backend.id, backend.endpoint, connect_timeout_s=router.connect_timeout_s,
                                first_byte_timeout_s=router.first_byte_timeout_s,
                                idle_timeout_s=router.idle_timeout_s, api_key=backend.api_key)


class RawReply(BodyReads):
    """A backend's answer once its status line and headers arrived; every body read is translated."""

    __slots__ = ("_client", "_conn", "_watch", "_writer", "content_length", "headers",
                 "is_chunked", "status")

    def __init__(self, conn: Connection, client: RawBackendClient, writer: asyncio.Task[None] | None) -> None:
        self._conn, self._client, self._writer = conn, client, writer
        self.status = conn.status
        self.headers: ResponseHeaders = conn.headers
        self.content_length = conn.content_length
        self.is_chunked = conn.chunked
        self._error_body = None
        idle_s = client.failures.idle_timeout_s
        self._watch = IdleWatch(conn.silence, idle_s) if idle_s and not conn.complete else None

    @property
    def _backend_id(self) -> str:
        return self._client.backend_id

    @property
    def is_sse(self) -> bool:
        return "text/event-stream" in self.headers.get("content-type", "")

    async def readany(self) -> bytes:
        """The next piece of the body as it arrived; b"" at its end."""
        conn = self._conn
        try:
            data = conn.take()
            if data is not None:
                return data
            watch = self._watch
            while data is None:
                if watch is not None:
                    watch.reads += 1
                    watch.waiting = True
                try:
                    await conn.more()
                finally:
                    if watch is not None:
                        watch.waiting = False
                data = conn.take()
            return data
        except (ConnectionBroken, BadResponse) as exc:
            raise self._failure(exc) from exc

    async def pipe(self, deliver: Deliver, drain: Drain) -> None:
        """The rest of the body handed to `deliver` by the connection as each read brings it (see `pipe_to`)."""
        conn, watch = self._conn, self._watch
        try:
            while True:
                data = conn.take()  # what came before piping, or before a break: it goes first
                if data:
                    if not deliver(data):
                        await drain()
                elif data is not None:
                    return
                elif conn.receiver_full:
                    await drain()  # writing to a slow client is not the backend's silence
                    conn.receiver_drained()
                else:
                    # Handed on by the connection while this waits: until the end, a break or a full receiver.
                    conn.pipe_to(deliver, watch)
                    if watch is not None:
                        watch.waiting = True
                    try:
                        await conn.more()
                    finally:
                        conn.pipe_to(None)
                        if watch is not None:
                            watch.waiting = False
        except (ConnectionBroken, BadResponse) as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc: ConnectionBroken | BadResponse) -> UpstreamError:
        if isinstance(exc, BadResponse):
            return self._client.failures.invalid(exc)
        if self._watch is not None and self._watch.fired:
            return self._client.failures.silent()
        return self._client.failures.broke_off(exc)

    def abandon(self) -> None:
        if not self._conn.complete:  # what is left unread is still on its way: the connection is spent
            self._conn.close()

    def forget_connection(self) -> None:
        """Keep the connection behind this reply out of the pool (it ended in a bad state)."""
        self._conn.close()

    def release(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        conn, writer = self._conn, self._writer
        reusable = conn.complete and conn.keep_alive and conn.error is None
        if writer is not None and not writer.done():
            writer.cancel()  # the backend answered before taking the whole body: the connection is spent
            reusable = False
        self._client.release(conn, reusable)


class _Exchange(AbstractAsyncContextManager[RawReply]):
    __slots__ = ("_args", "_client", "_reply")

    def __init__(self, client: RawBackendClient, args: tuple[str, str, str | None, Headers, Body]) -> None:
        self._client, self._args = client, args
        self._reply: RawReply | None = None

    async def __aenter__(self) -> RawReply:
        self._reply = await self._client.send(*self._args)
        return self._reply

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        if self._reply is not None:
            self._reply.release()


class RawBackendClient:
    """Pooled keep-alive connections to one `http://` backend."""

    def __init__(self, backend_id: str, base_url: str, *, connect_timeout_s: float,
                 first_byte_timeout_s: float | None = None, idle_timeout_s: float | None = None,
                 api_key: str | None = None) -> None:
        self.backend_id = backend_id
        self.base_url = base_url
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the raw client speaks plain http only, not {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._prefix = parts.path.rstrip("/")  # a backend served under a path, e.g. behind a gateway
        authority = f"[{self._host}]" if ":" in self._host else self._host
        if parts.port is not None and parts.port != 80:
            authority += f":{parts.port}"
        self._constant = f"Host: {authority}\r\n" + (f"Authorization: Bearer {api_key}\r\n" if api_key else "")
        self._replaces_auth = api_key is not None
        self.failures = Failures(backend_id, base_url, connect_timeout_s=connect_timeout_s,
                                 first_byte_timeout_s=first_byte_timeout_s, idle_timeout_s=idle_timeout_s)
        self._heads: dict[tuple[str, str], str] = {}
        self._idle: list[Connection] = []
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        """Close the idle connections; those in use close when their reply is released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def open(self, method: str, path: str, *, query: str | None = None, headers: Headers = (),
             body: Body = None) -> _Exchange:
        """Send a request; the context yields the reply once its headers arrived and releases it."""
        return _Exchange(self, (method, path, query, headers, body))

    async def get_json(self, path: str, *, timeout_s: float, method: str = "GET", body: Any = None) -> Any:
        """A small control-plane call (health, tags, ps, show) with its own overall timeout."""
        payload = None if body is None else orjson.dumps(body)
        headers = (("Content-Type", "application/json"),) if payload is not None else ()
        try:
            async with asyncio.timeout(timeout_s), self.open(method, path, headers=headers, body=payload) as reply:
                answer, status = await reply.read(_CONTROL_REPLY_LIMIT), reply.status
        except TimeoutError as exc:
            if isinstance(exc, UpstreamError):
                raise
            raise self.failures.control_timeout(method, path, timeout_s) from exc
        return json_answer(self.backend_id, method, path, status, answer)

    async def send(self, method: str, path: str, query: str | None, headers: Headers, body: Body) -> RawReply:
        """Write the request and wait for the final response's headers (a 1xx is passed over)."""
        head = self._request_head(method, path, query, headers, body)
        # A pooled connection the backend closed while idle fails before any answer; a body in memory
        # can be sent again on a fresh connection, a stream read once cannot.
        attempts = 1 if isinstance(body, AsyncIterable) else 2
        head_only = method == "HEAD"
        for attempt in range(attempts):
            conn = self._pooled()
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
            conn.begin(head_only)
            writer = None
            if body is None:
                conn.write(head)
            elif isinstance(body, bytes):
                if len(body) <= _COPY_LIMIT:
                    conn.write(head + body)
                else:
                    conn.writelines([head, body])
            else:
                writer = asyncio.ensure_future(_stream_body(conn, head, body, chunked=not _has_length(headers)))
            timeout_s = self.failures.first_byte_timeout_s
            timer = conn.loop.call_later(timeout_s, conn.time_out_head) if timeout_s else None
            try:
                await conn.head()
            except ClosedBeforeAnswer as exc:
                _discard(conn, writer)
                if reused and attempt + 1 < attempts:
                    continue
                raise self.failures.closed_before_answer() from exc
            except HeadTimeout as exc:
                _discard(conn, writer)
                raise self.failures.head_timeout() from exc
            except ConnectionBroken as exc:
                _discard(conn, writer)
                raise self.failures.connection_failed(exc) from exc
            except BadResponse as exc:
                _discard(conn, writer)
                raise self.failures.invalid(exc) from exc
            except BaseException:
                _discard(conn, writer)  # cancelled: the client went away while the backend had not answered
                raise
            finally:
                if timer is not None:
                    timer.cancel()
            return RawReply(conn, self, writer)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def release(self, conn: Connection, reusable: bool) -> None:
        if reusable and not conn.closed and not self._closed:
            conn.end()
            self._idle.append(conn)
        else:
            conn.close()

    def _pooled(self) -> Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if conn.loop.time() - conn.idle_since > KEEPALIVE_S:
                # The most recent is too old, so are all the others.
                self._idle = []
                for stale in (conn, *idle):
                    stale.close()
                return None
            return conn
        return None

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.failures.connect_timeout_s):
                _, conn = await loop.create_connection(lambda: Connection(self._lost), self._host, self._port)
        except TimeoutError as exc:
            raise self.failures.connect_timeout() from exc
        except OSError as exc:
            raise self.failures.unreachable(exc.strerror or exc) from exc
        return conn

    def _lost(self, conn: Connection) -> None:
        if conn in self._idle:
            self._idle.remove(conn)

    def _request_head(self, method: str, path: str, query: str | None, headers: Headers, body: Body) -> bytes:
        """The request line and headers, up to the blank line that ends them."""
        start = self._heads.get((method, path))
        if start is None:
            if not path.startswith("/") or path.startswith("//"):
                raise ValueError(f"not an origin-form path: {path!r}")
            target = path if _PLAIN_PATH.fullmatch(path) else quote(path, safe="/:@!$&'()*+,;=")
            start = f"{method} {self._prefix}{target} HTTP/1.1\r\n{self._constant}"
            if len(self._heads) >= _HEAD_CACHE_SIZE:
                self._heads.clear()
            self._heads[method, path] = start
        if query:
            line_end = start.index(" HTTP/1.1\r\n")
            start = f"{start[:line_end]}?{quote(query, safe='=&+;:@/?!$()*,~')}{start[line_end:]}"
        lines = [f"{name}: {value}\r\n" for name, value in headers
                 if not (self._replaces_auth and name.lower() == "authorization")]
        given = "".join(lines)
        if given.count("\n") != len(lines) or given.count("\r") != len(lines):
            raise ValueError("a header name or value holds a line break")
        if body is None:
            framing = "Content-Length: 0\r\n\r\n" if method in _BODY_METHODS else "\r\n"
        elif isinstance(body, bytes):
            framing = f"Content-Length: {len(body)}\r\n\r\n"
        elif _has_length(headers):
            framing = "\r\n"
        else:
            framing = "Transfer-Encoding: chunked\r\n\r\n"
        return (start + given + framing).encode("utf-8", "surrogateescape")


def _discard(conn: Connection, writer: asyncio.Task[None] | None) -> None:
    conn.close()
    if writer is not None:
        writer.cancel()


def _has_length(headers: Headers) -> bool:
    return any(name.lower() == "content-length" for name, _ in headers)


async def _stream_body(conn: Connection, head: bytes, body: AsyncIterable[bytes], *, chunked: bool) -> None:
    """Send a streamed request body as it is read (a blob upload), chunked unless its length was given."""
    try:
        conn.write(head)
        async for piece in body:
            if not piece:
                continue
            if chunked:
                conn.writelines([b"%x\r\n" % len(piece), piece, b"\r\n"])
            else:
                conn.write(piece)
            await conn.drain()
        if chunked:
            conn.write(b"0\r\n\r\n")
    except ConnectionBroken:
        return  # the backend went away: waiting for its answer says so
    except Exception as exc:  # the client's body failed: the exchange cannot go on
        conn.fail(ConnectionBroken(f"the request body could not be read: {exc}"))
