"""What a call comes in as and what goes back: the protocol-neutral values between a front and the
pipeline.

A front turns its request into a `Call` (an operation in a dialect, with the body, the routing hints
and the sizing it asks for) and renders the `Reply`: a status, the pipeline's decisions as data
(`CallRecord`), then either a whole body or a stream of pieces. Pieces are bytes already in the
client's framing (a relayed stream), event dicts for the front to frame (a translated stream),
`END_OF_STREAM` (OpenAI's `[DONE]`) or, last, a `StreamFailure`. A relayed stream can also be piped
(`Reply.pipe`): its bytes go to the front's `Sink` from the upstream connection's callback as they
arrive, and only the failure, if any, comes back.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from ollama_proxy.core.context.sizing import SizeDecision
from ollama_proxy.core.ollama_api import SizeMode
from ollama_proxy.core.operations import Dialect, Operation
from ollama_proxy.core.routing.select import RoutingDecision
from ollama_proxy.core.routing.state import RouteRequest
from ollama_proxy.core.streams import EndOfStream, StreamFailure
from ollama_proxy.service.transport import Headers

Piece = bytes | dict[str, Any] | EndOfStream | StreamFailure


class Framing(StrEnum):
    """How a reply's body is written: one JSON document, NDJSON lines, SSE events, or bytes as they came."""

    JSON = "json"
    NDJSON = "ndjson"
    SSE = "sse"
    RAW = "raw"


# Not frozen, though nothing changes it: built on every request, and a frozen dataclass sets each of
# its sixteen fields through object.__setattr__.
@dataclass(slots=True)
class Call:
    """One request, as every front hands it to the pipeline."""

    operation: Operation
    dialect: Dialect
    method: str
    # Origin-form, as the client named it; sent as is unless the call is translated.
    path: str
    request_id: str
    model: str | None = None
    hints: RouteRequest = field(default_factory=RouteRequest)  # model and context are filled in by the pipeline
    size_mode: SizeMode = SizeMode.PASSTHROUGH
    fixed_size: int | None = None
    body: dict[str, Any] | None = None
    raw_body: bytes | None = None  # the body as received, sent on when nothing in it changes
    upload: AsyncIterable[bytes] | None = None  # a streamed request body (blob upload): sent once
    query: str | None = None
    headers: Headers = ()  # the client's headers that go on to the backend
    # OpenAI-type servers refuse an X-Request-ID that is not a UUID (llama-cpp-python: an empty 400).
    request_id_is_uuid: bool = True
    model_id: str | None = None  # Operation.MODELS: one model (None: the list)


@dataclass(slots=True)
class CallRecord:
    """What the pipeline decided and learned for one call, as data for the front to show and log."""

    started: float = field(default_factory=time.perf_counter)
    routing: RoutingDecision | None = None
    backend_id: str | None = None
    sizing: SizeDecision | None = None
    queued_ms: float = 0.0
    first_byte: float | None = None
    truncated: str | None = None  # Ollama evaluated fewer prompt tokens than were counted
    failure: str | None = None  # why a stream already under way broke


class Sink(Protocol):
    """Where a front has a piped stream written: the client's connection, in the client's framing."""

    def write(self, data: bytes) -> bool:
        """Write one piece; False when the client's buffer is full (await `drain` before the next)."""

    async def drain(self) -> None: ...


@dataclass(slots=True)
class Reply:
    status: int
    record: CallRecord
    framing: Framing
    # The backend's own headers when its body is relayed; empty when the proxy wrote the body.
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | dict[str, Any] | list[Any] | None = None
    stream: AsyncGenerator[Piece, None] | None = None
    # The same stream, written to the front's sink as it arrives; returns its last piece when it failed.
    # A front uses one of `stream` and `pipe`, never both.
    pipe: Callable[[Sink], Awaitable[StreamFailure | None]] | None = None
