"""The `service.transport` port over aiohttp's client: one pooled session per backend, and the one
place that knows aiohttp's client exceptions.

Everything above this module sees `UpstreamConnectError` / `UpstreamTimeout` from
`ollama_proxy.errors`, never an aiohttp type: sending, waiting for the answer and reading its body
all go through the same translation, so a backend that breaks off mid-body is reported like one
that could not be reached.

URLs are built from the backend's configured origin and an already normalised path
(`core.ollama_api.normalized_path`), never by joining what a client sent to a base URL: a request
target such as `//host:port/...` must not be able to name another server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy
from yarl import URL

from ollama_proxy.adapters.upstream.shared import BodyReads, Failures, IdleWatch, json_answer
from ollama_proxy.config.schema import BackendConfig, RouterConfig
from ollama_proxy.errors import UpstreamError
from ollama_proxy.service.transport import Body, Headers

_URL_CACHE_SIZE = 256


class AiohttpReply(BodyReads):
    """A backend's answer once its status line and headers arrived; every body read is translated."""

    __slots__ = ("_broken", "_response", "_upstream", "_watch", "content_length", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse, upstream: AiohttpBackendClient,
                 idle_timeout_s: float | None) -> None:
        self._response = response
        self._upstream = upstream
        self._watch = IdleWatch(response.close, idle_timeout_s) if idle_timeout_s else None
        self.status = response.status
        self.headers: CIMultiDictProxy[str] = response.headers
        self.content_length = response.content_length
        self._error_body = None
        self._broken: UpstreamError | None = None  # raised once what arrived before the break was read

    @property
    def _backend_id(self) -> str:
        return self._upstream.backend_id

    @property
    def is_sse(self) -> bool:
        return "text/event-stream" in self.headers.get("Content-Type", "")

    @property
    def is_chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "")

    async def readany(self) -> bytes:
        """The next piece of the body as it arrived; b"" at its end."""
        if self._broken is not None:
            raise self._broken
        watch = self._watch
        if watch is not None:
            watch.reads += 1
            watch.waiting = True
        content = self._response.content
        try:
            return await content.readany()
        except (TimeoutError, aiohttp.ClientError) as exc:
            error = (self._upstream.failures.silent() if watch is not None and watch.fired
                     else self._upstream.translated(exc, reading=True))
            if content._buffer:  # aiohttp raises at once, before handing over what arrived first
                self._broken = error
                return content._read_nowait(-1)
            raise error from exc
        finally:
            if watch is not None:
                watch.waiting = False

    def release(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self._response.release()

    def abandon(self) -> None:
        self._response.close()

    def forget_connection(self) -> None:
        """Close the connection behind a stream that ended without finishing, so it is not reused.

        llama.cpp resets the connection behind its empty over-long-prompt stream a moment after the
        stream ended cleanly; pooled, it fails the next request as "connection reset by peer", which
        counts against a healthy backend. aiohttp hands a connection back to its pool at end of file,
        before the reader sees b"", so `close()` no longer reaches it: the transport itself is closed
        (the pool skips closed ones). Call it right after the read that returned b"", before the next
        await, while no other request is likely to have picked the connection up.
        """
        protocol = getattr(self._response, "_protocol", None)  # aiohttp 3.x keeps it after the release
        if protocol is not None:
            protocol.close()
        self._response.close()


class AiohttpTransport:
    """Makes an aiohttp client per backend, with the router's timeouts."""

    def client_for(self, backend: BackendConfig, router: RouterConfig) -> AiohttpBackendClient:
        return AiohttpBackendClient(backend.id, backend.endpoint, connect_timeout_s=router.connect_timeout_s,
                                    first_byte_timeout_s=router.first_byte_timeout_s,
                                    idle_timeout_s=router.idle_timeout_s, api_key=backend.api_key)


class AiohttpBackendClient:
    """A keep-alive connection pool to one backend."""

    def __init__(self, backend_id: str, base_url: str, *, connect_timeout_s: float,
                 first_byte_timeout_s: float | None = None, idle_timeout_s: float | None = None,
                 api_key: str | None = None) -> None:
        self.backend_id = backend_id
        self.base_url = base_url
        origin = URL(base_url)
        self._origin = origin.with_path("/").with_query(None).with_fragment(None)
        self._prefix = origin.path.rstrip("/")  # a backend served under a path, e.g. behind a gateway
        self._urls: dict[str, URL] = {}
        self._connect_timeout_s = connect_timeout_s
        self._first_byte_timeout_s = first_byte_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.failures = Failures(backend_id, base_url, connect_timeout_s=connect_timeout_s,
                                 first_byte_timeout_s=first_byte_timeout_s, idle_timeout_s=idle_timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, enable_cleanup_closed=False,
                                         ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Generation can run for minutes, so there is no overall bound; each phase has its own:
            # connecting (here), then the response headers (a model load comes first) and the
            # silence between two pieces of the body once it flows (both in `open`).
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout_s),
            auto_decompress=False,
            # Forward exactly what the client sent; do not add our own Accept-Encoding or UA.
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"upstream {self.backend_id!r} used before start()")
        return self._session

    def url(self, path: str) -> URL:
        """The backend's origin with `path`, which must be origin-form (one leading slash)."""
        url = self._urls.get(path)
        if url is None:
            if not path.startswith("/") or path.startswith("//"):
                raise ValueError(f"not an origin-form path: {path!r}")
            url = self._origin.with_path(self._prefix + path)
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            self._urls[path] = url
        return url

    @asynccontextmanager
    async def open(self, method: str, path: str, *, query: str | None = None, headers: Headers = (),
                   body: Body = None) -> AsyncIterator[AiohttpReply]:
        """Send a request and yield the reply once its status line and headers arrived.

        Errors while sending, waiting and reading the body are `UpstreamError`s; what goes wrong
        while the caller writes to its own client is the caller's to judge (a client that went
        away is not the backend's fault).
        """
        if self._auth:
            # The backend's own key replaces whatever the client sent in its place.
            headers = [*((k, v) for k, v in headers if k.lower() != "authorization"), *self._auth.items()]
        url = self.url(path)
        # A pooled keep-alive connection the backend closed while idle fails before any answer;
        # a request whose body is in memory is safe to send once more on a fresh connection.
        attempts = 2 if body is None or isinstance(body, bytes) else 1
        for attempt in range(attempts):
            try:
                async with asyncio.timeout(self._first_byte_timeout_s):
                    response = await self.session.request(method, url, params=query, headers=headers, data=body,
                                                          allow_redirects=False)
                break
            except (TimeoutError, aiohttp.ClientError) as exc:
                if attempt + 1 < attempts and isinstance(exc, aiohttp.ServerDisconnectedError):
                    continue
                raise self.translated(exc, reading=False) from exc
        reply = AiohttpReply(response, self, self._idle_timeout_s)
        try:
            yield reply
        finally:
            reply.release()

    async def get_json(self, path: str, *, timeout_s: float, method: str = "GET",
                       body: Any = None) -> Any:
        """A small control-plane call (health, tags, ps, show) with its own overall timeout."""
        try:
            async with self.session.request(
                method, self.url(path), data=None if body is None else orjson.dumps(body),
                headers={"Content-Type": "application/json", **self._auth} if body is not None else self._auth,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                status, payload = response.status, await response.read()
        except TimeoutError as exc:
            raise self.failures.control_timeout(method, path, timeout_s) from exc
        except aiohttp.ClientError as exc:
            raise self.translated(exc, reading=False) from exc
        return json_answer(self.backend_id, method, path, status, payload)

    def translated(self, exc: BaseException, *, reading: bool) -> UpstreamError:
        """The proxy's error for an aiohttp client failure or timeout.

        `reading` says whether the headers had arrived: then a timeout is silence mid-body and a
        broken connection is a reply cut short, not a server out of reach.
        """
        failures = self.failures
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return failures.connect_timeout()
        if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
            return failures.silent() if reading else failures.head_timeout()
        if isinstance(exc, aiohttp.ClientPayloadError) or (reading and isinstance(exc, aiohttp.ClientConnectionError)):
            return failures.broke_off(exc or type(exc).__name__)
        if isinstance(exc, aiohttp.ClientConnectorError):
            return failures.unreachable(exc)
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return failures.closed_before_answer()
        if isinstance(exc, aiohttp.ClientConnectionError):
            return failures.connection_failed(exc)
        if isinstance(exc, aiohttp.ClientResponseError):
            return failures.invalid(exc.message)
        return UpstreamError(self.backend_id, f"{type(exc).__name__}: {exc}")
