"""Server-sent events: an incremental decoder and the encoder for the events the proxy writes.

The decoder follows the WHATWG event-stream rules (lines end in `\\n`, `\\r\\n` or `\\r`; a blank
line dispatches; `:` starts a comment; `data` lines join with `\\n`) and never assumes that a
chunk is a line or an event: network reads split anywhere, even inside a `\\r\\n` pair or a UTF-8
character. It knows nothing about what the events mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ollama_proxy.core.streams import MAX_LINE_BYTES, LineTooLong

DONE_DATA = "[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str | None = None

    @property
    def is_done(self) -> bool:
        """True for OpenAI's end-of-stream sentinel `data: [DONE]`."""
        return self.data.strip() == DONE_DATA

    def json(self) -> Any:
        """The data parsed as JSON; raises `orjson.JSONDecodeError` (a ValueError) if it is not."""
        return orjson.loads(self.data)


def encode_event(payload: Any) -> bytes:
    """One `data: <json>\\n\\n` event; orjson never emits a raw newline, so one data line suffices.

    An object with a string `type` (every Anthropic and Responses event) is a named event,
    `event: <type>`, as those APIs send them and their SDKs dispatch on; chat completion chunks have none.
    """
    kind = payload.get("type") if type(payload) is dict else None
    if type(kind) is str:
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class SseDecoder:
    """Feed bytes as they arrive, get complete events back.

    >>> d = SseDecoder()
    >>> d.feed(b"data: he"), d.feed(b"llo\\n\\n")
    ([], [SseEvent(data='hello', event='message', id=None)])
    """

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self._limit = limit  # bytes of one line, and of one event's data (LineTooLong past it)
        self._buffer = b""
        self._data: list[str] = []
        self._data_size = 0
        self._event = ""
        self._id: str | None = None
        # A chunk that ends in `\r` may be followed by the `\n` of the same line break.
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._skip_lf = False
        self._buffer += chunk
        events: list[SseEvent] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                break
            end, after = cut
            if after == len(self._buffer) and self._buffer[end:after] == b"\r":
                self._skip_lf = True
            line, self._buffer = self._buffer[:end], self._buffer[after:]
            event = self._take_line(line.decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
        if len(self._buffer) > self._limit or self._data_size > self._limit:
            raise LineTooLong(self._limit)
        return events

    def flush(self) -> list[SseEvent]:
        """Events still pending at end of stream.

        The spec drops an event that was not closed by a blank line; a proxy is better served
        seeing it (a final `data: [DONE]` without its blank line is still a finished stream).
        """
        events: list[SseEvent] = []
        if self._buffer:
            line, self._buffer = self._buffer, b""
            event = self._take_line(line.decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
        event = self._take_line("")
        if event is not None:
            events.append(event)
        return events

    def _take_line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_size += len(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> SseEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SseEvent(data="\n".join(self._data), event=self._event or "message", id=self._id)
        self._data = []
        self._data_size = 0
        self._event = ""
        return event


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """Where the first complete line ends and where the next begins, or None if there is none yet."""
    lf = buffer.find(b"\n")
    cr = buffer.find(b"\r")
    if cr == -1 or (lf != -1 and lf < cr):
        return None if lf == -1 else (lf, lf + 1)
    if cr + 1 < len(buffer) and buffer[cr + 1:cr + 2] == b"\n":
        return cr, cr + 2
    return cr, cr + 1
