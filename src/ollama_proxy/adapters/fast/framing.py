"""HTTP/1.1 framing decisions of the fast front, as pure functions over bytes and strings: which
requests it serves itself (the rest go to aiohttp on the same connection), and the bytes of a
response head, a chunk and the constant headers, built once where they never change."""

from __future__ import annotations

import time
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus

from ollama_proxy.adapters.websocket.front import PATH as WEBSOCKET_PATH

# The inference and passthrough path space (core.ollama_api's, plus the sizing prefix). Anything else is
# the proxy's own view (status, admin, metrics, the page) and stays on aiohttp.
_SERVED_PREFIXES = (b"/api/", b"/v1/", b"/proxy-context/")
_SERVED_EXACT = frozenset({b"/", b"/api", b"/v1"})
# Targets aiohttp decodes before routing (percent-escapes) or would read differently (a fragment) are
# left to it, so a request is routed the same way whichever engine runs.
_DEFERRED_BYTES = (b"%", b"#")
_WEBSOCKET = WEBSOCKET_PATH.encode()

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
CHUNK_FORMAT = b"%x\r\n%b\r\n"  # a chunk of a chunked body: its length in hex, the bytes
CHUNKED = b"Transfer-Encoding: chunked\r\n"
JSON_TYPE = b"Content-Type: application/json\r\n"
KEEP_ALIVE = b"Connection: keep-alive\r\n"
CLOSE = b"Connection: close\r\n"
_STATUS_LINES: dict[int, bytes] = {}
# Answers that never carry a body (RFC 9110 6.4.1): no Content-Length or chunking either.
_BODYLESS = frozenset({204, 304})


def serves(target: bytes, upgrade: bool) -> bool:
    """Whether the fast front answers a request for `target` itself."""
    if upgrade or not target.startswith(b"/") or any(b in target for b in _DEFERRED_BYTES):
        return False
    path = target.partition(b"?")[0]
    if path == _WEBSOCKET:
        return False
    return path in _SERVED_EXACT or path.startswith(_SERVED_PREFIXES)


def split_target(target: bytes) -> tuple[str, str | None]:
    """The path and the query (None when empty) of an origin-form target."""
    path, _, query = target.partition(b"?")
    return path.decode("latin-1"), query.decode("latin-1") or None


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason}\r\n".encode()
    return line


def header_lines(headers: Iterable[tuple[str, str]]) -> bytes:
    """Header lines as aiohttp writes them (UTF-8, undecodable bytes kept as they came); a line that
    would break the framing (a CR or LF in it) is left out."""
    lines = [f"{name}: {value}\r\n" for name, value in headers]
    text = "".join(lines)
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):  # one line break each, or filter
        text = "".join(line for line in lines if line.count("\n") == 1 and line.count("\r") == 1)
    return text.encode("utf-8", "surrogateescape")


def head(status: int, lines: bytes, *, length: int | None, keep_alive: bool, date: bytes,
         chunked: bool = True) -> bytes:
    """A response head; `length` None means a body of unknown length: chunked, or (HTTP/1.0, `chunked`
    False) ended by closing the connection."""
    if status in _BODYLESS:
        framing = b""
    elif length is None:
        framing = CHUNKED if chunked else b""
        keep_alive = keep_alive and chunked
    else:
        framing = b"Content-Length: %d\r\n" % length
    return b"".join((status_line(status), date, lines, framing, KEEP_ALIVE if keep_alive else CLOSE, b"\r\n"))


def chunk(piece: bytes) -> bytes:
    return CHUNK_FORMAT % (len(piece), piece)


def has_body(status: int, method: str) -> bool:
    return method != "HEAD" and status not in _BODYLESS


class DateLine:
    """The Date header line, rebuilt at most once a second."""

    __slots__ = ("_line", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = f"Date: {formatdate(now, usegmt=True)}\r\n".encode()
        return self._line
