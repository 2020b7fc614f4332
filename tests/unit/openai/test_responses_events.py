"""Native chat streams as Responses API events: the sequences, each event as the SDK's models read it."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from ollama_proxy.core.openai import ResponsesTranslator, responses_to_native

STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def translator(**request: Any) -> ResponsesTranslator:
    call = responses_to_native({"model": "llama3.2", "input": "Hi", "stream": True, **request})
    made = call.translation.translator(rng=random.Random(3), now=1787390000)
    assert isinstance(made, ResponsesTranslator)
    return made


def run(lines: list[dict[str, Any]], *, abort: tuple[str, int] | None = None, **request: Any) -> list[dict[str, Any]]:
    """Feed native lines (then abort, if asked); every event is checked against the SDK's event models."""
    t = translator(**request)
    events: list[Any] = [event for line in lines for event in t.feed(line)]
    if abort is not None:
        events += t.abort(*abort)
    for event in events:
        assert isinstance(event, dict)
        orjson.dumps(event)
        STREAM_EVENT.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def line(done: bool = False, reason: str = "stop", **message: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "llama3.2", "message": {"role": "assistant", "content": "", **message},
                           "done": done}
    if done:
        out.update(done_reason=reason, prompt_eval_count=9, eval_count=4)
    return out


START = ["response.created", "response.in_progress"]
MESSAGE_OPEN = ["response.output_item.added", "response.content_part.added"]
MESSAGE_CLOSE = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
REASONING_OPEN = ["response.output_item.added", "response.reasoning_summary_part.added"]
REASONING_CLOSE = ["response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
                   "response.output_item.done"]
CALL = ["response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done"]


def test_a_text_stream() -> None:
    events = run([line(content="Hel"), line(content="lo"), line(done=True)])
    assert types(events) == [*START, *MESSAGE_OPEN, "response.output_text.delta", "response.output_text.delta",
                             *MESSAGE_CLOSE, "response.completed"]
    created = events[0]["response"]
    assert created["status"] == "in_progress" and created["output"] == [] and created["usage"] is None
    added = events[2]
    assert added["output_index"] == 0 and added["item"]["content"] == [] and added["item"]["status"] == "in_progress"
    item_id = added["item"]["id"]
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert [(e["item_id"], e["output_index"], e["content_index"], e["delta"]) for e in deltas] == \
        [(item_id, 0, 0, "Hel"), (item_id, 0, 0, "lo")]
    assert events[-4]["text"] == "Hello"
    assert events[-3]["part"] == {"type": "output_text", "text": "Hello", "annotations": []}
    assert events[-2]["item"]["status"] == "completed"
    final = Response.model_validate(events[-1]["response"])
    assert final.id == created["id"] and final.status == "completed" and final.output_text == "Hello"
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens) == (9, 4)
    assert final.output[0].id == item_id


def test_reasoning_then_text() -> None:
    events = run([line(thinking="Greet"), line(thinking=" back."), line(content="Hi!"), line(done=True)])
    assert types(events) == [*START, *REASONING_OPEN, "response.reasoning_summary_text.delta",
                             "response.reasoning_summary_text.delta", *REASONING_CLOSE, *MESSAGE_OPEN,
                             "response.output_text.delta", *MESSAGE_CLOSE, "response.completed"]
    summary_done = next(e for e in events if e["type"] == "response.reasoning_summary_text.done")
    assert summary_done["text"] == "Greet back." and summary_done["output_index"] == 0
    reasoning, message = events[-1]["response"]["output"]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Greet back."}]
    assert message["content"][0]["text"] == "Hi!"
    assert next(e for e in events if e["type"] == "response.output_text.delta")["output_index"] == 1


def test_thinking_and_text_on_one_line_and_thinking_again_after_text() -> None:
    events = run([line(thinking="a", content="b"), line(thinking="c"), line(done=True)])
    output = events[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["reasoning", "message", "reasoning"]
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.added"] == [0, 1, 2]


def test_tool_calls() -> None:
    calls = [{"function": {"name": "weather", "arguments": {"city": "Paris"}}},
             {"id": "call_x", "function": {"name": "clock", "arguments": {}}}]
    events = run([line(content="Checking."), line(tool_calls=calls), line(done=True)])
    assert types(events) == [*START, *MESSAGE_OPEN, "response.output_text.delta", *MESSAGE_CLOSE, *CALL, *CALL,
                             "response.completed"]
    added = events[8]
    assert added["item"]["type"] == "function_call" and added["item"]["arguments"] == ""
    assert added["item"]["status"] == "in_progress" and added["output_index"] == 1
    assert orjson.loads(events[9]["delta"]) == {"city": "Paris"}
    assert events[10]["name"] == "weather" and events[10]["arguments"] == events[9]["delta"]
    output = events[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["message", "function_call", "function_call"]
    assert output[1]["id"].startswith("fc_") and output[1]["call_id"].startswith("call_")
    assert output[2]["call_id"] == "call_x" and output[2]["arguments"] == "{}"
    assert output[1] == events[11]["item"]


def test_a_tool_call_alone_has_no_message() -> None:
    events = run([line(tool_calls=[{"function": {"name": "clock", "arguments": {}}}], done=True)])
    assert types(events) == [*START, *CALL, "response.completed"]


def test_an_empty_answer_still_has_its_message() -> None:
    events = run([line(done=True)])
    assert types(events) == [*START, *MESSAGE_OPEN, *MESSAGE_CLOSE, "response.completed"]
    assert Response.model_validate(events[-1]["response"]).output_text == ""


def test_a_stream_cut_by_the_token_limit_ends_incomplete() -> None:
    events = run([line(content="Once upon"), line(done=True, reason="length")])
    assert types(events)[-1] == "response.incomplete"
    final = events[-1]["response"]
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete" and events[-2]["item"]["status"] == "incomplete"


def test_an_error_line_mid_stream_fails_the_response() -> None:
    t = translator()
    events: list[Any] = t.feed(line(content="Hal"))
    failure = t.feed({"error": "model runner crashed"})
    assert t.finished
    assert types(failure) == ["response.failed", "error"]
    failed, error = failure
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "server_error", "message": "model runner crashed"}
    assert failed["response"]["id"] == events[0]["response"]["id"]
    assert error["message"] == "model runner crashed" and error["code"] == "server_error"
    assert error["error"]["message"] == "model runner crashed" and error["error"]["type"] == "api_error"
    assert error["sequence_number"] == failed["sequence_number"] + 1 == len(events) + 1
    assert t.feed(line(content="more")) == [] and t.abort("late", 502) == []


def test_an_abort_before_any_line_still_starts_the_response() -> None:
    events = run([], abort=("backend 'gpu' stopped answering", 502))
    assert types(events) == [*START, "response.failed", "error"]


def test_an_abort_names_a_rate_limit() -> None:
    events = run([line(content="x")], abort=("slow down", 429))
    assert events[-2]["response"]["error"]["code"] == "rate_limit_exceeded"
    assert events[-1]["error"]["type"] == "rate_limit_error"


def test_the_failed_response_keeps_the_finished_items() -> None:
    events = run([line(thinking="t"), line(content="x")], abort=("broken", 502))
    assert [item["type"] for item in events[-2]["response"]["output"]] == ["reasoning"]


def test_nothing_follows_the_end() -> None:
    t = translator()
    t.feed(line(done=True))
    assert t.finished
    assert t.feed(line(content="late")) == [] and t.abort("late", 502) == []


@pytest.mark.parametrize("reason", ["stop", "length"])
def test_the_streamed_response_matches_the_whole_one(reason: str) -> None:
    message = {"thinking": "t", "content": "x", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}
    streamed = run([line(**message), line(done=True, reason=reason)])[-1]["response"]
    whole = translator().whole(line(done=True, reason=reason, **message))

    def shape(response: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in item.items() if k not in ("id", "call_id")} for item in response["output"]]

    assert shape(streamed) == shape(whole)
    assert {k: v for k, v in streamed.items() if k not in ("id", "output")} == \
        {k: v for k, v in whole.items() if k not in ("id", "output")}
