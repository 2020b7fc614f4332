"""Native NDJSON streams translated into OpenAI server-sent events, one native line at a time.

Event order for chat (as the OpenAI API sends it, reference 6.1 and 8.11): a role delta first,
then content / reasoning / tool-call deltas, then a finish chunk with `delta: {}`, then (with
`stream_options.include_usage`) a usage chunk with `choices: []`, then `data: [DONE]`.

A stream must never end silently: a native `{"error": ...}` line becomes an SSE error event
(and no `[DONE]`, so SDKs raise instead of returning a partial answer), and `close()` at the
upstream's end of file says so when no `done` line came. Nothing here does I/O or framing: the
caller gets event dicts (and `END_OF_STREAM` for `[DONE]`) and frames them as SSE.
"""

from __future__ import annotations

import random
from typing import Any

from ollama_proxy.core.openai.errors import openai_error
from ollama_proxy.core.openai.requests import ReplyContext, RequestKind
from ollama_proxy.core.openai.responses import (
    SYSTEM_FINGERPRINT,
    error_from_native,
    finish_reason,
    new_completion_id,
    reply_from_native,
    tool_calls_to_openai,
    usage,
)
from ollama_proxy.core.streams import END_OF_STREAM
from ollama_proxy.core.translation import UNFINISHED_STREAM, Event, stream_error


class StreamTranslator:
    """Feed parsed native lines, send on the events each call returns (often several).

    >>> t = StreamTranslator(ReplyContext(RequestKind.CHAT, "m", stream=True),
    ...                      completion_id="chatcmpl-1", created=0)
    >>> [e["choices"][0]["delta"] for e in t.feed({"message": {"content": "Hi"}, "done": False})]
    [{'role': 'assistant', 'content': ''}, {'content': 'Hi'}]
    """

    def __init__(self, context: ReplyContext, *, completion_id: str, created: int) -> None:
        self._context = context
        self._id = completion_id
        self._created = created
        self._chat = context.kind is RequestKind.CHAT
        self._object = "chat.completion.chunk" if self._chat else "text_completion"
        self._started = False
        self._tool_calls = 0
        self._finished = False

    @classmethod
    def start(cls, context: ReplyContext, *, rng: random.Random, now: float) -> StreamTranslator:
        return cls(context, completion_id=new_completion_id(context.kind, rng), created=int(now))

    @property
    def finished(self) -> bool:
        """True once `[DONE]` or an error event was produced; later calls return nothing."""
        return self._finished

    def whole(self, native: dict[str, Any]) -> dict[str, Any]:
        return reply_from_native(native, self._context, completion_id=self._id, created=self._created)

    def error(self, status: int, native: Any) -> tuple[int, dict[str, Any]]:
        return error_from_native(status, native)

    def feed(self, native: dict[str, Any]) -> list[Event]:
        if self._finished:
            return []
        if self._context.kind is RequestKind.EMBEDDING:
            raise ValueError("embeddings are never streamed")
        error = stream_error(native)
        if error is not None:
            return self.abort(error)
        events: list[Event] = []
        events += self._chat_deltas(native) if self._chat else self._text_deltas(native)
        if native.get("done"):
            events.extend(self._end(native))
        return events

    def abort(self, message: str, status: int = 500) -> list[Event]:
        """The error event that ends a stream that failed (nothing if it already ended)."""
        if self._finished:
            return []
        self._finished = True
        return [openai_error(message, status)[1]]

    def close(self) -> list[Event]:
        """Call at the upstream's end of file: an error event unless the stream already ended."""
        return self.abort(UNFINISHED_STREAM, 502)

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"id": self._id, "object": self._object, "created": self._created, "model": self._context.model,
                "system_fingerprint": SYSTEM_FINGERPRINT, "choices": choices, **extra}

    def _delta(self, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}])

    def _chat_deltas(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        message = native.get("message") or {}
        events = []
        if not self._started:
            self._started = True
            events.append(self._delta({"role": "assistant", "content": ""}))
        # Ollama may put thinking and content on one line; OpenAI clients expect one kind per chunk.
        if message.get("thinking"):
            events.append(self._delta({"reasoning": message["thinking"]}))
        if message.get("content"):
            events.append(self._delta({"content": message["content"]}))
        calls = message.get("tool_calls") or []
        if calls:
            deltas = [{"index": self._tool_calls + k, **call}
                      for k, call in enumerate(tool_calls_to_openai(calls, self._id, self._tool_calls))]
            self._tool_calls += len(calls)
            events.append(self._delta({"tool_calls": deltas}))
        return events

    def _text_deltas(self, native: dict[str, Any]) -> list[dict[str, Any]]:
        text = native.get("response")
        return [self._text_choice(text)] if text else []

    def _text_choice(self, text: str, reason: str | None = None) -> dict[str, Any]:
        return self._chunk([{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}])

    def _end(self, native: dict[str, Any]) -> list[Event]:
        self._finished = True
        reason = finish_reason(native.get("done_reason"), self._tool_calls > 0)
        events: list[Event] = [self._delta({}, reason) if self._chat else self._text_choice("", reason)]
        if self._context.include_usage:
            events.append(self._chunk([], usage=usage(native)))
        events.append(END_OF_STREAM)
        return events
