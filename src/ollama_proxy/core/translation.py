"""The shape every translated protocol takes: a client request turned into a native Ollama call, and a
translator that turns the native answer (a whole reply, an error, or NDJSON lines one by one) back into
the client's protocol.

OpenAI chat completions, OpenAI Responses and Anthropic Messages all fit it, so one relay serves them
all (`service.relays.translated`). Pure: a translator keeps only its own stream state; ids and clocks
are given to it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Protocol

from ollama_proxy.core.streams import EndOfStream

# What a translator hands back for the front to frame: an event object (an SSE event; one with a
# string "type" is sent as a named event, `event: <type>`), or the protocol's explicit end marker.
Event = dict[str, Any] | EndOfStream

UNFINISHED_STREAM = "the backend closed the stream before it finished"


def stream_error(native: dict[str, Any]) -> str | None:
    """The message of a native stream's error line (Ollama sends `{"error": ...}` mid-stream when a runner
    fails), None for any other line."""
    if "error" not in native:
        return None
    error = native["error"]
    return error if isinstance(error, str) else str(error)


class ReplyTranslator(Protocol):
    """The native answer to one call, in the client's protocol."""

    @property
    def finished(self) -> bool:
        """True once the stream's last event (its end or an error) was produced."""

    def whole(self, native: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed native reply as the client's response object."""

    def error(self, status: int, native: Any) -> tuple[int, dict[str, Any]]:
        """A native error reply (`{"error": "..."}` or anything else) as the client's status and error body."""

    def feed(self, native: dict[str, Any]) -> list[Event]:
        """One parsed native stream line; the events it produces (often several, maybe none)."""

    def abort(self, message: str, status: int) -> list[Event]:
        """The events that end a stream that broke (nothing if it already ended)."""


class Translation(Protocol):
    """What a request translator knows about the reply it will need: enough to build its translator."""

    @property
    def stream(self) -> bool:
        """The client asked for a stream."""

    def translator(self, *, rng: random.Random, now: float) -> ReplyTranslator:
        """A translator for one answer; `rng` makes the response ids, `now` (Unix seconds) its timestamps."""


@dataclass(frozen=True, slots=True)
class NativeCall:
    """A native call to make: POST `body` to `path` on an Ollama backend, its answer translated back by
    `translation`."""

    path: str
    body: dict[str, Any]
    translation: Translation
