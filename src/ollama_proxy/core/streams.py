"""Incremental stream helpers for relaying NDJSON without parsing every chunk.

The relay forwards bytes untouched; it only needs the last complete line (Ollama's final
`done: true` object with the metrics) once the stream ends. `LastLine` keeps just enough of the
tail to recover it, without copying chunks on the hot path.
"""

from __future__ import annotations


class LastLine:
    """Remembers the tail of a byte stream so the last complete line can be read at the end.

    Chunks are kept by reference from the most recent one that starts a new line; a chunk that
    contains a newline before its end resets the kept list, so memory stays bounded by the longest
    line (Ollama's final generate line with its `context` array can span many chunks).
    """

    __slots__ = ("_chunks", "chunks_seen")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self.chunks_seen = 0

    def feed(self, chunk: bytes) -> None:
        self.chunks_seen += 1
        # A newline strictly inside the chunk means every earlier byte belongs to finished lines
        # that cannot be the last one, unless this chunk ends the stream with a bare newline.
        if chunk.find(b"\n", 0, len(chunk) - 1) >= 0:
            self._chunks.clear()
        self._chunks.append(chunk)

    def line(self) -> bytes:
        """The last non-empty line seen (without its newline), or b"" if there was none."""
        data = b"".join(self._chunks).rstrip(b"\r\n")
        return data[data.rfind(b"\n") + 1:]


class LineSplitter:
    """Splits a byte stream into complete lines; keeps a partial line until the next chunk."""

    __slots__ = ("_partial",)

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._partial + chunk if self._partial else chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        return [line for line in lines if line.strip()]

    def flush(self) -> list[bytes]:
        rest, self._partial = self._partial, b""
        return [rest] if rest.strip() else []
