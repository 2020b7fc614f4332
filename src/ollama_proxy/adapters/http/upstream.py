"""The client side: one pooled aiohttp session per backend, and the one place that knows
aiohttp's client exceptions.

Everything above this module sees `UpstreamConnectError` / `UpstreamTimeout` from
`ollama_proxy.errors`, never an aiohttp type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict

from ollama_proxy.errors import UpstreamConnectError, UpstreamError, UpstreamTimeout

# Connection-level headers are meaningful for one hop only (RFC 9110 7.6.1). Host is rewritten
# because Ollama's DNS-rebinding check refuses foreign hosts with an empty 403; Origin is
# dropped because Ollama refuses unknown origins the same way: the proxy does CORS itself.
_REQUEST_DROP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade", "Host", "Origin", "Content-Length", "Expect",
))
_RESPONSE_DROP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "Date", "Server", "Trailer",
    "Upgrade", "Proxy-Connection", "Access-Control-Allow-Origin", "Access-Control-Allow-Credentials",
    "Access-Control-Allow-Headers", "Access-Control-Allow-Methods", "Access-Control-Expose-Headers",
))


def forwardable_request_headers(headers: Mapping[str, str], extra_drop: frozenset[str] = frozenset()
                                ) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lowered = name.lower()
        if lowered not in _REQUEST_DROP and lowered not in extra_drop:
            out.add(name, value)
    return out


def forwardable_response_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in _RESPONSE_DROP:
            out.add(name, value)
    return out


class Upstream:
    """A keep-alive connection pool to one backend."""

    def __init__(self, backend_id: str, base_url: str, *, connect_timeout_s: float,
                 api_key: str | None = None) -> None:
        self.backend_id = backend_id
        self.base_url = base_url
        self._connect_timeout_s = connect_timeout_s
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, enable_cleanup_closed=False,
                                         ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            base_url=self.base_url,
            connector=connector,
            # Generation can run for minutes and model loads stall up to OLLAMA_LOAD_TIMEOUT:
            # only the connect is bounded; the client decides how long it waits.
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

    @asynccontextmanager
    async def open(self, method: str, path: str, *, query: Any = None, headers: Mapping[str, str] | None = None,
                   data: Any = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a request and yield the response once its status line and headers arrived.

        Only sending is translated into `UpstreamError`s: what goes wrong while the caller reads
        the body or writes to its own client is the caller's to judge (a client that went away is
        not the backend's fault).
        """
        if self._auth:
            headers = {**(headers or {}), **self._auth}
        # A pooled keep-alive connection the backend closed while idle fails before any answer;
        # a request whose body is in memory is safe to send once more on a fresh connection.
        attempts = 2 if data is None or isinstance(data, bytes) else 1
        for attempt in range(attempts):
            try:
                with self.translate_errors():
                    response = await self.session.request(method, path, params=query, headers=headers, data=data,
                                                          allow_redirects=False)
                break
            except UpstreamConnectError as exc:
                if attempt + 1 == attempts or not isinstance(exc.__cause__, aiohttp.ServerDisconnectedError):
                    raise
        try:
            yield response
        finally:
            response.release()

    async def get_json(self, path: str, *, timeout_s: float, method: str = "GET",
                       body: Any = None) -> Any:
        """A small control-plane call (health, tags, ps, show) with its own overall timeout."""
        with self.translate_errors():
            async with self.session.request(
                method, path, data=None if body is None else orjson.dumps(body),
                headers={"Content-Type": "application/json", **self._auth} if body is not None else self._auth,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                payload = await response.read()
                if response.status >= 400:
                    raise UpstreamError(self.backend_id, f"{method} {path} answered {response.status}: "
                                                         f"{payload[:200].decode(errors='replace')}")
                try:
                    return orjson.loads(payload)
                except orjson.JSONDecodeError as exc:
                    raise UpstreamError(self.backend_id, f"{method} {path} answered non-JSON") from exc

    @contextmanager
    def translate_errors(self) -> Iterator[None]:
        try:
            yield
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(self.backend_id, f"no answer from {self.base_url} in time") from exc
        except aiohttp.ClientConnectionError as exc:
            raise UpstreamConnectError(self.backend_id, f"cannot reach {self.base_url} ({exc})") from exc
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamConnectError(self.backend_id, f"connection broke mid-response ({exc})") from exc
        except aiohttp.ClientResponseError as exc:
            raise UpstreamError(self.backend_id, f"invalid response ({exc.message})") from exc
