"""Native NDJSON chat streams translated into Anthropic Messages stream events, one native line at a time.

Event order, as the Anthropic API sends it: `message_start` (the message with empty content), `ping`, then
per content block `content_block_start`, its deltas (`thinking_delta`, `text_delta`, or one
`input_json_delta` holding a tool call's whole input), `content_block_stop`, with `index` counting up;
then `message_delta` (stop reason and usage) and `message_stop`. A new block starts whenever the native
lines switch between thinking and text, and for every tool call.

Anthropic has no end marker: a stream that breaks ends with one `error` event, which makes the SDKs
raise instead of returning a partial answer. Nothing here does I/O or framing: the caller gets event
dicts and sends each as `event: <type>`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import orjson

from ollama_proxy.core.anthropic.errors import anthropic_error
from ollama_proxy.core.anthropic.replies import (
    NO_SIGNATURE,
    error_from_native,
    message_from_native,
    new_message_id,
    reply_parts,
    stop_reason,
    tool_input,
    tool_use_block,
    tool_use_id,
    usage,
)
from ollama_proxy.core.translation import Event, ReplyTranslator, stream_error

# How each kind of streamed block starts, before its deltas fill it in.
_EMPTY_BLOCKS: dict[str, dict[str, Any]] = {
    "thinking": {"type": "thinking", "thinking": "", "signature": NO_SIGNATURE},
    "text": {"type": "text", "text": ""},
}


@dataclass(frozen=True, slots=True)
class MessagesReply:
    """What the reply translation needs to know about the `/v1/messages` request it answers (a
    `Translation`)."""

    model: str
    stream: bool = False

    def translator(self, *, rng: random.Random, now: float) -> ReplyTranslator:
        # `now` goes unused: Anthropic messages carry no timestamp.
        return MessageTranslator(self.model, message_id=new_message_id(rng))


class MessageTranslator:
    """One answer to a `/v1/messages` request: `whole` for a reply, `feed` line by line for a stream.

    >>> t = MessageTranslator("qwen3", message_id="msg_1")
    >>> [e["type"] for e in t.feed({"message": {"content": "Hi"}, "done": False})]
    ['message_start', 'ping', 'content_block_start', 'content_block_delta']
    """

    def __init__(self, model: str, *, message_id: str) -> None:
        self._model = model
        self._id = message_id
        self._started = False
        self._open_kind: str | None = None  # the open content block's kind; None between blocks
        self._blocks = 0
        self._tool_calls = 0
        self._finished = False

    @property
    def finished(self) -> bool:
        """True once `message_stop` or an error event was produced; later calls return nothing."""
        return self._finished

    def whole(self, native: dict[str, Any]) -> dict[str, Any]:
        return message_from_native(native, model=self._model, message_id=self._id)

    def error(self, status: int, native: Any) -> tuple[int, dict[str, Any]]:
        return error_from_native(status, native)

    def feed(self, native: dict[str, Any]) -> list[Event]:
        if self._finished:
            return []
        error = stream_error(native)
        if error is not None:
            return self.abort(error, 500)
        events = self._start()
        thinking, text, calls = reply_parts(native)
        if thinking:
            events += self._delta("thinking", {"type": "thinking_delta", "thinking": thinking})
        if text:
            events += self._delta("text", {"type": "text_delta", "text": text})
        for call in calls:
            events += self._tool_use(call)
        if native.get("done"):
            events += self._end(native)
        return events

    def abort(self, message: str, status: int) -> list[Event]:
        """The error event that ends a stream that broke (nothing if it already ended)."""
        if self._finished:
            return []
        self._finished = True
        return [anthropic_error(message, status)]

    def _start(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        empty: dict[str, Any] = {"id": self._id, "type": "message", "role": "assistant", "model": self._model,
                                 "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage({})}
        return [{"type": "message_start", "message": empty}, {"type": "ping"}]

    def _open(self, kind: str, block: dict[str, Any]) -> list[Event]:
        events = self._close()
        self._open_kind = kind
        self._blocks += 1
        return [*events, {"type": "content_block_start", "index": self._blocks - 1, "content_block": block}]

    def _close(self) -> list[Event]:
        if self._open_kind is None:
            return []
        self._open_kind = None
        return [{"type": "content_block_stop", "index": self._blocks - 1}]

    def _delta(self, kind: str, delta: dict[str, Any]) -> list[Event]:
        events = [] if self._open_kind == kind else self._open(kind, dict(_EMPTY_BLOCKS[kind]))
        return [*events, {"type": "content_block_delta", "index": self._blocks - 1, "delta": delta}]

    def _tool_use(self, call: dict[str, Any]) -> list[Event]:
        """A whole tool call: Ollama sends each complete, so its input goes out in one delta."""
        block = tool_use_block(call, tool_use_id(self._id, self._tool_calls), {})
        self._tool_calls += 1
        partial = orjson.dumps(tool_input(call)).decode()
        return [*self._open("tool_use", block),
                {"type": "content_block_delta", "index": self._blocks - 1,
                 "delta": {"type": "input_json_delta", "partial_json": partial}},
                *self._close()]

    def _end(self, native: dict[str, Any]) -> list[Event]:
        self._finished = True
        # As in a whole reply, an answer with nothing in it still has its (empty) text block.
        events = self._close() if self._blocks else [*self._open("text", dict(_EMPTY_BLOCKS["text"])),
                                                      *self._close()]
        counts = usage(native)
        delta = {"stop_reason": stop_reason(native.get("done_reason"), self._tool_calls > 0),
                 "stop_sequence": None}
        return [*events,
                {"type": "message_delta", "delta": delta,
                 "usage": {"output_tokens": counts["output_tokens"], "input_tokens": counts["input_tokens"]}},
                {"type": "message_stop"}]
