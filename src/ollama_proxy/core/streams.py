"""Incremental stream helpers for relaying NDJSON without parsing every chunk, in bounded memory.

The relay forwards bytes untouched; it only needs the last complete line (Ollama's final
`done: true` object with the metrics) once the stream ends. `LastLine` keeps just enough of the
tail to recover it, without copying chunks on the hot path. `LineSplitter` cuts a stream into
lines for the translating relays. Neither holds more than a fixed number of bytes, however long a
line a backend sends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# The longest line the translating relays accept: the official Ollama Go client's own limit, so a
# line too long for the proxy is too long for Ollama's client too.
MAX_LINE_BYTES = 8 * 1024 * 1024
# What `LastLine` keeps of a line longer than TAIL_LIMIT: its start and its end.
HEAD_BYTES = 8 * 1024
TAIL_LIMIT = 32 * 1024
_TAIL_BYTES = TAIL_LIMIT - HEAD_BYTES
# Ollama's final generate line carries the whole token context before the metrics
# (`..."done_reason":"stop","context":[1,2,...],"total_duration":...}`): the field that makes a
# final line long. It is all integers, so the first `]` after it closes it.
_CONTEXT_FIELD = b',"context":['


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """A protocol's explicit end marker (OpenAI's `data: [DONE]`), for the front to frame."""


END_OF_STREAM = EndOfStream()


@dataclass(frozen=True, slots=True)
class StreamFailure:
    """The last piece of a stream that broke after its start reached the client: the front ends the
    stream with an error object in its protocol's shape, on a line of its own (`open_line`: the
    bytes relayed so far stop in the middle of one)."""

    reason: str
    open_line: bool = False


class LineTooLong(ValueError):
    """A backend sent a line longer than the proxy accepts."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a line longer than {limit} bytes")


class LastLine:
    """Remembers the tail of a byte stream so the last line can be read at the end.

    Chunks are kept by reference from the one that starts the current line. A line longer than
    TAIL_LIMIT keeps only its first HEAD_BYTES and its last bytes, so memory stays bounded by
    TAIL_LIMIT plus one chunk; `line()` then answers the line with Ollama's `context` array left
    out when that is what made it long (its metrics survive), else the start and end joined.
    """

    __slots__ = ("_chunks", "_forward", "_head", "_size", "chunks_seen", "ends_line")

    def __init__(self, forward: Callable[[bytes], bool] | None = None) -> None:
        # Where each chunk goes on after it was seen (a piped stream's sink): one call per chunk, not two.
        self._forward = forward
        self._chunks: list[bytes] = []
        self._size = 0
        self._head: bytes | None = None  # the start of the current line once it overflowed
        self.chunks_seen = 0
        # Whether the bytes so far end at a line boundary (an error line can follow directly).
        self.ends_line = True

    def feed(self, chunk: bytes) -> bool:
        """Note `chunk`, then hand it to `forward` if there is one: what that returns (True without one)."""
        if chunk:
            self.chunks_seen += 1
            # A new line starts here if the previous chunk ended one (a lone newline only ends it again),
            # or somewhere inside this chunk if it holds a newline before its last byte.
            if (self.ends_line and chunk != b"\n" and chunk != b"\r\n") or chunk.find(b"\n", 0, len(chunk) - 1) >= 0:
                self._chunks = [chunk]
                self._size = len(chunk)
                self._head = None
            else:
                self._chunks.append(chunk)
                self._size += len(chunk)
            if self._size > TAIL_LIMIT:
                self._compact()
            self.ends_line = chunk[-1] == 0x0A
        return self._forward is None or self._forward(chunk)

    def _compact(self) -> None:
        data = b"".join(self._chunks)
        start = data.rfind(b"\n", 0, len(data) - 1) + 1
        if self._head is None and len(data) - start <= TAIL_LIMIT:
            kept = data[start:]  # only finished lines were long: the current one is kept whole
        else:
            if self._head is None:
                self._head = data[start:start + HEAD_BYTES]
            kept = data[-_TAIL_BYTES:]
        self._chunks = [kept]
        self._size = len(kept)

    @property
    def overflowed(self) -> bool:
        return self._head is not None

    def line(self) -> bytes:
        """The last non-empty line seen (without its newline), or b"" if there was none."""
        data = b"".join(self._chunks).rstrip(b"\r\n")
        if self._head is None:
            return data[data.rfind(b"\n") + 1:]
        head = self._head
        cut = head.find(_CONTEXT_FIELD)
        close = data.find(b"]")
        if cut >= 0 and close >= 0:
            return head[:cut] + data[close + 1:]
        return head + data


class LineSplitter:
    """Splits a byte stream into complete lines; keeps a partial line (up to `limit` bytes) until
    the next chunk, and raises LineTooLong past it."""

    __slots__ = ("_limit", "_pieces", "_size")

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self._pieces: list[bytes] = []
        self._size = 0
        self._limit = limit

    def feed(self, chunk: bytes) -> list[bytes]:
        cut = chunk.rfind(b"\n")
        if cut < 0:
            self._pieces.append(chunk)
            self._size += len(chunk)
            if self._size > self._limit:
                raise LineTooLong(self._limit)
            return []
        data = b"".join((*self._pieces, chunk[:cut])) if self._pieces else chunk[:cut]
        rest = chunk[cut + 1:]
        self._pieces = [rest] if rest else []
        self._size = len(rest)
        return [line for line in data.split(b"\n") if line.strip()]

    def flush(self) -> list[bytes]:
        rest = b"".join(self._pieces)
        self._pieces, self._size = [], 0
        return [rest] if rest.strip() else []
