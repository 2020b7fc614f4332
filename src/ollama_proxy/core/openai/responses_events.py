"""Native `/api/chat` NDJSON translated into the Responses API's stream events, one native line at a time.

The sequence, as OpenAI sends it (each event with the next `sequence_number`): `response.created` and
`response.in_progress`; per output item `response.output_item.added`, its part and deltas, and
`response.output_item.done`; then `response.completed`, or `response.incomplete` when the reply ran
out of tokens. Thinking becomes a reasoning item with a summary (`response.reasoning_summary_*` events,
as in the whole reply; the SDK's accumulator passes either kind of reasoning event through and keeps the
final response's items), text a message item (`response.content_part.*`, `response.output_text.*`), each
native tool call a function_call item (`response.function_call_arguments.*`).
Only one text item is open at a time: a switch between thinking and text closes one and opens the next.

A stream never ends silently: a native `{"error": ...}` line or `abort()` sends `response.failed` and
then an `error` event. The `error` event carries its fields both at the top, as OpenAI documents them,
and nested under `error`, as the live API sends them and as the `openai` SDK checks to raise `APIError`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ollama_proxy.core.openai.errors import openai_error
from ollama_proxy.core.openai.messages import tool_call_to_openai
from ollama_proxy.core.openai.responses import error_from_native
from ollama_proxy.core.openai.responses_api import (
    ResponsesContext,
    end_status,
    function_call_item,
    message_item,
    new_id,
    output_text,
    reasoning_item,
    response_from_native,
    response_object,
    summary_text,
)
from ollama_proxy.core.translation import Event, stream_error

_REASONING = "reasoning"
_MESSAGE = "message"


@dataclass(slots=True)
class _OpenItem:
    """The reasoning or message item whose deltas are streaming."""

    kind: str
    item_id: str
    output_index: int
    texts: list[str] = field(default_factory=list)


class ResponsesTranslator:
    """The `ReplyTranslator` for one Responses call: a whole reply, an error, or the stream's events.

    >>> from ollama_proxy.core.openai.responses_api import ResponsesContext
    >>> t = ResponsesTranslator(ResponsesContext("m", True, {}), rng=random.Random(0), now=0)
    >>> [e["type"] for e in t.feed({"message": {"content": "Hi"}, "done": False})]  # doctest: +NORMALIZE_WHITESPACE
    ['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added',
     'response.output_text.delta']
    """

    def __init__(self, context: ResponsesContext, *, rng: random.Random, now: float) -> None:
        self._context = context
        self._rng = rng
        self._id = new_id("resp", rng)
        self._created = int(now)
        self._sequence = 0
        self._started = False
        self._finished = False
        self._output: list[dict[str, Any]] = []  # the finished items, in output_index order
        self._open: _OpenItem | None = None

    @property
    def finished(self) -> bool:
        """True once `response.completed`, `response.incomplete` or an error was produced."""
        return self._finished

    def whole(self, native: dict[str, Any]) -> dict[str, Any]:
        return response_from_native(native, self._context, response_id=self._id, created_at=self._created,
                                    rng=self._rng)

    def error(self, status: int, native: Any) -> tuple[int, dict[str, Any]]:
        return error_from_native(status, native)

    def feed(self, native: dict[str, Any]) -> list[Event]:
        if self._finished:
            return []
        error = stream_error(native)
        if error is not None:
            return self.abort(error, 500)
        events = self._start()
        message = native.get("message") or {}
        # Ollama may put thinking, text and tool calls on one line; that is also their order in a reply.
        if message.get("thinking"):
            events += self._delta(_REASONING, message["thinking"])
        if message.get("content"):
            events += self._delta(_MESSAGE, message["content"])
        for call in message.get("tool_calls") or []:
            events += self._close("completed")
            events += self._function_call(call)
        if native.get("done"):
            events += self._end(native)
        return events

    def abort(self, message: str, status: int) -> list[Event]:
        """`response.failed` and an `error` event (nothing if the stream already ended)."""
        if self._finished:
            return []
        self._finished = True
        events = self._start()
        code = "rate_limit_exceeded" if status == 429 else "server_error"
        failed = response_object(self._context, self._id, self._created, "failed", list(self._output),
                                 error={"code": code, "message": message})
        events.append(self._event("response.failed", response=failed))
        nested = openai_error(message, status, code=code)[1]["error"]
        events.append(self._event("error", code=code, message=message, param=None, error=nested))
        return events

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _start(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        response = response_object(self._context, self._id, self._created, "in_progress", [])
        return [self._event("response.created", response=response),
                self._event("response.in_progress", response=response)]

    def _delta(self, kind: str, text: str) -> list[Event]:
        events = []
        if self._open is None or self._open.kind != kind:
            events += self._close("completed")
            events += self._open_item(kind)
        item = self._open
        assert item is not None
        item.texts.append(text)
        if kind == _REASONING:
            events.append(self._event("response.reasoning_summary_text.delta", item_id=item.item_id,
                                      output_index=item.output_index, summary_index=0, delta=text))
        else:
            events.append(self._event("response.output_text.delta", item_id=item.item_id,
                                      output_index=item.output_index, content_index=0, delta=text, logprobs=[]))
        return events

    def _open_item(self, kind: str) -> list[Event]:
        item_id = new_id("rs" if kind == _REASONING else "msg", self._rng)
        item = self._open = _OpenItem(kind, item_id, len(self._output))
        where = {"item_id": item_id, "output_index": item.output_index}
        if kind == _REASONING:
            return [self._event("response.output_item.added", output_index=item.output_index,
                                item=reasoning_item(item_id, None)),
                    self._event("response.reasoning_summary_part.added", **where, summary_index=0,
                                part=summary_text(""))]
        return [self._event("response.output_item.added", output_index=item.output_index,
                            item=message_item(item_id, None, "in_progress")),
                self._event("response.content_part.added", **where, content_index=0, part=output_text(""))]

    def _close(self, status: str) -> list[Event]:
        """The events that finish the open item; `status` is the message's (reasoning is complete when closed)."""
        item, self._open = self._open, None
        if item is None:
            return []
        text = "".join(item.texts)
        where = {"item_id": item.item_id, "output_index": item.output_index}
        events: list[Event]
        if item.kind == _REASONING:
            done = reasoning_item(item.item_id, text)
            events = [self._event("response.reasoning_summary_text.done", **where, summary_index=0, text=text),
                      self._event("response.reasoning_summary_part.done", **where, summary_index=0,
                                  part=summary_text(text))]
        else:
            done = message_item(item.item_id, text, status)
            events = [self._event("response.output_text.done", **where, content_index=0, text=text, logprobs=[]),
                      self._event("response.content_part.done", **where, content_index=0, part=output_text(text))]
        events.append(self._event("response.output_item.done", output_index=item.output_index, item=done))
        self._output.append(done)
        return events

    def _function_call(self, native_call: dict[str, Any]) -> list[Event]:
        call = tool_call_to_openai(native_call, new_id("call", self._rng))
        item_id = new_id("fc", self._rng)
        index = len(self._output)
        arguments = call["function"]["arguments"]
        done = function_call_item(item_id, call, "completed")
        where = {"item_id": item_id, "output_index": index}
        self._output.append(done)
        added = function_call_item(item_id, call, "in_progress", arguments="")
        return [self._event("response.output_item.added", output_index=index, item=added),
                self._event("response.function_call_arguments.delta", **where, delta=arguments),
                self._event("response.function_call_arguments.done", **where, name=done["name"], arguments=arguments),
                self._event("response.output_item.done", output_index=index, item=done)]

    def _end(self, native: dict[str, Any]) -> list[Event]:
        self._finished = True
        status = end_status(native)
        events = self._close(status)
        # Like a whole reply, an answer without text or tool calls still has its (empty) message.
        if not any(item["type"] in (_MESSAGE, "function_call") for item in self._output):
            events += self._open_item(_MESSAGE)
            events += self._close(status)
        response = response_object(self._context, self._id, self._created, status, list(self._output),
                                   native=native)
        events.append(self._event(f"response.{status}", response=response))
        return events
