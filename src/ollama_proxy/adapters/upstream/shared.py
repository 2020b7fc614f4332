"""What both upstream clients (`aiohttp_client`, `raw_client`) share: how each failure is worded as an
`UpstreamError`, reading a body whole or an error body up to its cap, and noticing silence in the middle
of a body."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from ollama_proxy.errors import UpstreamConnectError, UpstreamError, UpstreamTimeout
from ollama_proxy.service.transport import ERROR_BODY_LIMIT, Deliver, Drain, pipe_by_reads


class Failures:
    """The proxy's error for each way a backend can fail, naming the backend, where it is and the
    timeout that expired."""

    __slots__ = ("backend_id", "connect_timeout_s", "first_byte_timeout_s", "idle_timeout_s", "where")

    def __init__(self, backend_id: str, where: str, *, connect_timeout_s: float,
                 first_byte_timeout_s: float | None, idle_timeout_s: float | None) -> None:
        self.backend_id, self.where = backend_id, where
        self.connect_timeout_s = connect_timeout_s
        self.first_byte_timeout_s = first_byte_timeout_s
        self.idle_timeout_s = idle_timeout_s

    def connect_timeout(self) -> UpstreamTimeout:
        return UpstreamTimeout(self.backend_id, f"no connection to {self.where} within "
                                                f"router.connect_timeout_s={self.connect_timeout_s:g} s")

    def head_timeout(self) -> UpstreamTimeout:
        return UpstreamTimeout(self.backend_id, f"no response headers from {self.where} within "
                                                f"router.first_byte_timeout_s={self.first_byte_timeout_s:g} s")

    def silent(self) -> UpstreamTimeout:
        return UpstreamTimeout(self.backend_id, f"silent for router.idle_timeout_s={self.idle_timeout_s:g} s "
                                                "in the middle of its reply")

    def control_timeout(self, method: str, path: str, timeout_s: float) -> UpstreamTimeout:
        return UpstreamTimeout(self.backend_id, f"{method} {path}: no answer from {self.where} within {timeout_s:g} s")

    def unreachable(self, detail: object) -> UpstreamConnectError:
        return UpstreamConnectError(self.backend_id, f"cannot reach {self.where} ({detail})")

    def closed_before_answer(self) -> UpstreamConnectError:
        return UpstreamConnectError(self.backend_id, f"{self.where} closed the connection before answering")

    def connection_failed(self, detail: object) -> UpstreamConnectError:
        return UpstreamConnectError(self.backend_id, f"connection to {self.where} failed ({detail})")

    def broke_off(self, detail: object) -> UpstreamConnectError:
        return UpstreamConnectError(self.backend_id, f"reply broke off mid-body ({detail})")

    def invalid(self, detail: object) -> UpstreamError:
        return UpstreamError(self.backend_id, f"invalid response ({detail})")


def json_answer(backend_id: str, method: str, path: str, status: int, payload: bytes) -> Any:
    """A control-plane answer's JSON, or the UpstreamError it is."""
    if status >= 400:
        raise UpstreamError(backend_id, f"{method} {path} answered {status}: {payload[:200].decode(errors='replace')}")
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(backend_id, f"{method} {path} answered non-JSON") from exc


class BodyReads:
    """`read`, `read_error_body` and `pipe` over a reply's own `readany`.

    A subclass provides `readany`, `abandon` (close the connection behind a body left unread), the
    `content_length` it was announced with and `_backend_id`, and sets `_error_body` to None.
    """

    __slots__ = ("_error_body",)
    _error_body: bytes | None
    content_length: int | None

    @property
    def _backend_id(self) -> str:
        raise NotImplementedError

    async def readany(self) -> bytes:
        raise NotImplementedError

    def abandon(self) -> None:
        raise NotImplementedError

    async def read(self, limit: int) -> bytes:
        """The whole body. A body longer than `limit` is a backend fault (UpstreamError), not a
        reason to hold unbounded memory."""
        length = self.content_length
        if length is not None and length > limit:
            self.abandon()
            raise UpstreamError(self._backend_id, f"reply of {length} bytes exceeds the proxy's "
                                                  f"{limit}-byte limit for replies it must read whole")
        body = await self._read_up_to(limit)
        if len(body) > limit:
            raise UpstreamError(self._backend_id, f"reply exceeds the proxy's {limit}-byte limit "
                                                  "for replies it must read whole")
        return body

    async def read_error_body(self) -> bytes:
        """At most ERROR_BODY_LIMIT bytes of an error body; a longer one is cut there. Read once,
        then remembered: deciding on failover and relaying the error both need it."""
        if self._error_body is None:
            self._error_body = (await self._read_up_to(ERROR_BODY_LIMIT))[:ERROR_BODY_LIMIT]
        return self._error_body

    async def pipe(self, deliver: Deliver, drain: Drain) -> None:
        await pipe_by_reads(self.readany, deliver, drain)

    async def _read_up_to(self, limit: int) -> bytes:
        """The body, or its first `limit` + some bytes when it is longer (its connection then closed)."""
        first = await self.readany()
        if not first:
            return first
        parts = [first]
        size = len(first)
        while size <= limit and (chunk := await self.readany()):
            parts.append(chunk)
            size += len(chunk)
        if size > limit:
            self.abandon()
        return parts[0] if len(parts) == 1 else b"".join(parts)


class IdleWatch:
    """Closes a reply whose body has been silent for the idle timeout.

    One timer per idle period, not one per chunk (aiohttp's `sock_read` re-arms a timer on every
    piece of data): each tick checks whether the read that was waiting at the last tick is still the
    one waiting, so silence is caught between one and two periods after it began. Time spent writing
    to a slow client is not silence: no read is waiting then.
    """

    __slots__ = ("_close", "_handle", "_seen", "_timeout_s", "fired", "reads", "waiting")

    def __init__(self, close: Callable[[], None], timeout_s: float) -> None:
        self._close = close
        self._timeout_s = timeout_s
        self.reads = 0
        self.waiting = False
        self.fired = False
        self._seen = -1
        self._handle = asyncio.get_running_loop().call_later(timeout_s, self._tick)

    def _tick(self) -> None:
        if self.waiting and self.reads == self._seen:
            self.fired = True
            self._close()  # the waiting read fails, and is reported as silence
            return
        self._seen = self.reads
        self._handle = asyncio.get_running_loop().call_later(self._timeout_s, self._tick)

    def cancel(self) -> None:
        self._handle.cancel()
