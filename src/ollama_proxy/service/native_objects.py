"""A reply as native Ollama objects, for fronts that re-frame every piece (WebSocket, gRPC, D-Bus) rather
than relay bytes: a whole reply becomes one object, a stream its lines one by one, parsed.

The last item may be a `StreamFailure` (the stream broke, or a line was not a JSON object): the front
ends its stream with an error in its own shape; nothing is cut silently.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson

from ollama_proxy.core.streams import EndOfStream, LineSplitter, LineTooLong, StreamFailure
from ollama_proxy.service.reply import Reply


async def native_objects(reply: Reply) -> AsyncGenerator[dict[str, Any] | StreamFailure, None]:
    """Every native object of `reply` in order (an error reply's body included, as `{"error": ...}`)."""
    if reply.stream is None:
        body = reply.body
        value = _parse(body) if isinstance(body, bytes) else body
        if isinstance(value, dict):
            yield value
        else:
            yield StreamFailure(f"the backend answered with something that is not a JSON object: {body!r:.80}")
        return
    splitter = LineSplitter()
    async for piece in reply.stream:
        if isinstance(piece, dict):
            yield piece
        elif isinstance(piece, bytes):
            try:
                lines = splitter.feed(piece)
            except LineTooLong as exc:
                yield StreamFailure(f"the backend sent {exc}")
                return
            for line in lines:
                value = _parse(line)
                if not isinstance(value, dict):
                    yield StreamFailure(f"the backend sent a line that is not a JSON object: {line[:80]!r}")
                    return
                yield value
        elif isinstance(piece, StreamFailure):
            yield piece
            return
        elif not isinstance(piece, EndOfStream):
            raise TypeError(f"unexpected piece {piece!r}")
    for line in splitter.flush():
        value = _parse(line)
        if isinstance(value, dict):
            yield value


def _parse(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
