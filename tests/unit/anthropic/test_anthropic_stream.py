from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic_fakes import FakeApi
from pydantic import TypeAdapter

from ollama_proxy.core.anthropic import MessageTranslator
from ollama_proxy.core.translation import UNFINISHED_STREAM

EVENT = TypeAdapter(RawMessageStreamEvent)


def line(content: str = "", *, thinking: str = "", calls: list[dict[str, Any]] | None = None,
         **final: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking
    if calls:
        message["tool_calls"] = calls
    return {"model": "qwen3", "message": message, "done": bool(final), **final}


END = {"done_reason": "stop", "prompt_eval_count": 11, "eval_count": 3}
HELLO = [line("Hello"), line("!"), line(**END)]
THINKING = [line(thinking="The user"), line(thinking=" greets."), line("Hi"), line(" there"), line(**END)]
CALLS = [{"id": "call_1", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Oslo"}}},
         {"function": {"index": 1, "name": "get_time", "arguments": {}}}]
TOOL_USE = [line("Checking."), line(calls=CALLS, **END)]


def validate(events: list[dict[str, Any]]) -> None:
    """Each event against the SDK's own model of it (which leaves out `ping`, an event it skips)."""
    for event in events:
        if event["type"] != "ping":
            EVENT.validate_python(event)


def translator() -> MessageTranslator:
    return MessageTranslator("qwen3", message_id="msg_417")


def run(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    t = translator()
    events = [event for native in lines for event in t.feed(native)]
    assert all(isinstance(event, dict) for event in events)
    return events  # type: ignore[return-value]


def shape(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Each event as (type, index, what it carries), to compare sequences at a glance."""
    out: list[tuple[Any, ...]] = []
    for event in events:
        kind = event["type"]
        if kind == "content_block_start":
            out.append((kind, event["index"], event["content_block"]["type"]))
        elif kind == "content_block_delta":
            delta = event["delta"]
            out.append((kind, event["index"], delta.get("text", delta.get("thinking", delta.get("partial_json")))))
        elif kind == "content_block_stop":
            out.append((kind, event["index"]))
        elif kind == "message_delta":
            out.append((kind, event["delta"]["stop_reason"]))
        else:
            out.append((kind,))
    return out


def test_text_stream_sequence() -> None:
    events = run(HELLO)
    assert shape(events) == [
        ("message_start",), ("ping",), ("content_block_start", 0, "text"),
        ("content_block_delta", 0, "Hello"), ("content_block_delta", 0, "!"), ("content_block_stop", 0),
        ("message_delta", "end_turn"), ("message_stop",)]
    assert events[0]["message"] == {"id": "msg_417", "type": "message", "role": "assistant", "model": "qwen3",
                                    "content": [], "stop_reason": None, "stop_sequence": None,
                                    "usage": {"input_tokens": 0, "output_tokens": 0}}
    assert events[2]["content_block"] == {"type": "text", "text": ""}
    assert events[3]["delta"] == {"type": "text_delta", "text": "Hello"}
    assert events[6] == {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                         "usage": {"output_tokens": 3, "input_tokens": 11}}
    validate(events)


def test_thinking_then_text_are_two_blocks() -> None:
    events = run(THINKING)
    assert shape(events)[2:-2] == [
        ("content_block_start", 0, "thinking"), ("content_block_delta", 0, "The user"),
        ("content_block_delta", 0, " greets."), ("content_block_stop", 0),
        ("content_block_start", 1, "text"), ("content_block_delta", 1, "Hi"),
        ("content_block_delta", 1, " there"), ("content_block_stop", 1)]
    assert events[2]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert events[3]["delta"] == {"type": "thinking_delta", "thinking": "The user"}


def test_thinking_and_text_on_one_line_come_out_thinking_first() -> None:
    assert shape(run([line("Hi", thinking="Hmm"), line(**END)]))[2:-2] == [
        ("content_block_start", 0, "thinking"), ("content_block_delta", 0, "Hmm"), ("content_block_stop", 0),
        ("content_block_start", 1, "text"), ("content_block_delta", 1, "Hi"), ("content_block_stop", 1)]


def test_tool_calls_are_one_block_each_with_their_whole_input() -> None:
    events = run(TOOL_USE)
    assert shape(events)[2:] == [
        ("content_block_start", 0, "text"), ("content_block_delta", 0, "Checking."), ("content_block_stop", 0),
        ("content_block_start", 1, "tool_use"), ("content_block_delta", 1, '{"city":"Oslo"}'),
        ("content_block_stop", 1),
        ("content_block_start", 2, "tool_use"), ("content_block_delta", 2, "{}"), ("content_block_stop", 2),
        ("message_delta", "tool_use"), ("message_stop",)]
    assert events[5]["content_block"] == {"type": "tool_use", "id": "toolu_417_0", "name": "get_weather",
                                          "input": {}}
    assert events[6]["delta"] == {"type": "input_json_delta", "partial_json": '{"city":"Oslo"}'}
    assert events[8]["content_block"]["id"] == "toolu_417_1"
    validate(events)


def test_text_after_a_tool_call_opens_a_new_block() -> None:
    lines = [line(calls=CALLS[:1]), line("Done."), line(**END)]
    assert [e["content_block"]["type"] for e in run(lines) if e["type"] == "content_block_start"] == [
        "tool_use", "text"]


def test_empty_answer_still_has_an_empty_text_block() -> None:
    assert shape(run([line(**END)])) == [
        ("message_start",), ("ping",), ("content_block_start", 0, "text"), ("content_block_stop", 0),
        ("message_delta", "end_turn"), ("message_stop",)]


def test_length_ends_with_max_tokens() -> None:
    events = run([line("Hel"), line(done_reason="length", eval_count=2)])
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2]["usage"] == {"output_tokens": 2, "input_tokens": 0}


def test_nothing_after_the_end() -> None:
    t = translator()
    for native in HELLO:
        t.feed(native)
    assert t.finished
    assert t.feed(line("late")) == []
    assert t.abort(UNFINISHED_STREAM, 502) == []


def test_native_error_line_mid_stream_ends_with_one_error_event() -> None:
    t = translator()
    events = t.feed(line("Hel"))
    assert not t.finished
    events = t.feed({"error": "model runner has unexpectedly stopped"})
    assert events == [{"type": "error", "error": {"type": "api_error",
                                                  "message": "model runner has unexpectedly stopped"}}]
    assert t.finished
    assert t.feed(line("more")) == []
    assert t.feed(line(**END)) == []


def test_error_before_anything_is_the_only_event() -> None:
    t = translator()
    assert [e["type"] for e in t.feed({"error": {"code": 7}})] == ["error"]  # type: ignore[index]


@pytest.mark.parametrize(("status", "kind"), [(502, "api_error"), (504, "timeout_error"), (503, "overloaded_error")])
def test_abort_ends_the_stream_once(status: int, kind: str) -> None:
    t = translator()
    t.feed(line("Hel"))
    assert t.abort(UNFINISHED_STREAM, status) == [
        {"type": "error", "error": {"type": kind, "message": UNFINISHED_STREAM}}]
    assert t.finished
    assert t.abort(UNFINISHED_STREAM, status) == []
    assert t.feed(line(**END)) == []


# The real SDK reading the events, framed as the front frames them.

def ask_stream(client: anthropic.Anthropic) -> Any:
    return client.messages.stream(model="qwen3", max_tokens=64, messages=[{"role": "user", "content": "Hi"}])


def test_sdk_stream_reads_text_stop_reason_and_usage(api: FakeApi, client: anthropic.Anthropic) -> None:
    api.answer_events(run(HELLO))
    with ask_stream(client) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello!"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 3)
    assert api.requests[0]["stream"] is True


@pytest.mark.parametrize("lines", [HELLO, THINKING, TOOL_USE, [line(**END)]], ids=["text", "thinking", "tools",
                                                                                   "empty"])
def test_sdk_accumulates_the_same_message_as_the_whole_reply(api: FakeApi, client: anthropic.Anthropic,
                                                              lines: list[dict[str, Any]]) -> None:
    """The whole reply a native `stream: false` call gives equals what the SDK builds from the stream."""
    native_whole = dict(lines[-1])
    native_whole["message"] = {
        "role": "assistant", "content": "".join(n["message"]["content"] for n in lines),
        "thinking": "".join(n["message"].get("thinking", "") for n in lines),
        "tool_calls": [c for n in lines for c in n["message"].get("tool_calls", [])]}
    api.answer_events(run(lines))
    with ask_stream(client) as stream:
        final = stream.get_final_message()
    assert final.model_dump(exclude_none=True) == Message.model_validate(
        translator().whole(native_whole)).model_dump(exclude_none=True)


def test_sdk_stream_gives_tool_input_as_an_object(api: FakeApi, client: anthropic.Anthropic) -> None:
    api.answer_events(run(TOOL_USE))
    with ask_stream(client) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    tool_uses = [block for block in final.content if block.type == "tool_use"]
    assert [(b.id, b.name, b.input) for b in tool_uses] == [("toolu_417_0", "get_weather", {"city": "Oslo"}),
                                                            ("toolu_417_1", "get_time", {})]


def test_sdk_raw_stream_yields_our_events_in_order(api: FakeApi, client: anthropic.Anthropic) -> None:
    events = run(THINKING)
    api.answer_events(events)
    raw = client.messages.create(model="qwen3", max_tokens=64, stream=True,
                                 messages=[{"role": "user", "content": "Hi"}])
    # The SDK skips ping events itself.
    assert [event.type for event in raw] == [e["type"] for e in events if e["type"] != "ping"]


def test_sdk_raises_on_an_error_event_mid_stream(api: FakeApi, client: anthropic.Anthropic) -> None:
    t = translator()
    events = [*t.feed(line("Hel")), *t.feed(line("lo")), *t.abort("backend 'gpu' stopped answering", 502)]
    api.answer_events(events)  # type: ignore[arg-type]
    received = []
    with pytest.raises(anthropic.APIStatusError) as caught, ask_stream(client) as stream:
        received.extend(stream.text_stream)
    assert "".join(received) == "Hello"
    assert caught.value.body == {"type": "error",
                                 "error": {"type": "api_error", "message": "backend 'gpu' stopped answering"}}


ODD_LINES = [
    {"message": "not an object"}, {"message": None}, {"message": {"content": 7, "thinking": ["x"]}},
    {"message": {"tool_calls": "nope"}}, {"message": {"tool_calls": [1, None, {"function": "f"}]}},
    {"message": {"tool_calls": [{"function": {"name": 3, "arguments": [1]}}]}},
    {"done": True, "prompt_eval_count": "many", "eval_count": True, "done_reason": ["length"]},
]


@pytest.mark.parametrize("odd", ODD_LINES, ids=range(len(ODD_LINES)))
def test_odd_native_lines_still_make_a_stream_the_sdk_reads(api: FakeApi, client: anthropic.Anthropic,
                                                            odd: dict[str, Any]) -> None:
    events = run([line("Hi"), odd, line(**END)])
    validate(events)
    assert events[-1] == {"type": "message_stop"}
    api.answer_events(events)
    with ask_stream(client) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == "Hi"
    Message.model_validate(translator().whole(odd))
