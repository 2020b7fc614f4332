"""The real `openai` SDK reading the translator's output, served by an httpx mock transport (no sockets):
`responses.create` whole and streamed, `responses.stream(...)` and its final response, and failures."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from ollama_proxy.core.openai import responses_to_native

WEATHER = {"type": "function", "name": "weather", "description": "Weather now",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def framed(events: list[Any]) -> bytes:
    """The events as the HTTP front frames them: named SSE events."""
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


class Proxy:
    """Answers `POST /v1/responses` by translating the SDK's request and the given native reply."""

    def __init__(self, native_lines: list[dict[str, Any]], *, abort: tuple[str, int] | None = None) -> None:
        self.native_lines = native_lines
        self.abort = abort
        self.native_body: dict[str, Any] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST" and request.url.path == "/v1/responses"
        call = responses_to_native(orjson.loads(request.content))
        self.native_body = call.body
        translator = call.translation.translator(rng=random.Random(5), now=1787390000)
        if not call.translation.stream:
            return httpx.Response(200, json=translator.whole(self.native_lines[-1]))
        events = [event for line in self.native_lines for event in translator.feed(line)]
        if self.abort is not None:
            events += translator.abort(*self.abort)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=framed(events))


@pytest.fixture
def sdk() -> Iterator[Any]:
    def connect(proxy: Proxy) -> openai.OpenAI:
        return openai.OpenAI(http_client=httpx.Client(transport=httpx.MockTransport(proxy)),
                             base_url="http://proxy.test/v1", api_key="x", max_retries=0)
    yield connect


def line(done: bool = False, reason: str = "stop", **message: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "llama3.2", "message": {"role": "assistant", "content": "", **message},
                           "done": done}
    if done:
        out.update(done_reason=reason, prompt_eval_count=21, eval_count=6)
    return out


HELLO = [line(thinking="They greet me."), line(content="Hello"), line(content=" there!"), line(done=True)]
TWO_CALLS = [{"function": {"name": "weather", "arguments": {"city": "Paris"}}},
             {"function": {"name": "weather", "arguments": {"city": "Rome"}}}]
CALLS = [line(tool_calls=TWO_CALLS), line(done=True)]


def test_a_whole_response(sdk: Any) -> None:
    proxy = Proxy([line(done=True, thinking="Easy.", content="Hello there!")])
    response = sdk(proxy).responses.create(model="llama3.2", input="Hi", instructions="Be kind.",
                                           max_output_tokens=50, reasoning={"effort": "low"})
    assert response.output_text == "Hello there!" and response.status == "completed"
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.usage is not None and response.usage.total_tokens == 27
    assert proxy.native_body["messages"][0] == {"role": "system", "content": "Be kind."}
    assert proxy.native_body["options"] == {"num_predict": 50} and proxy.native_body["think"] == "low"


def test_create_with_stream_yields_the_typed_events(sdk: Any) -> None:
    stream = sdk(Proxy(HELLO)).responses.create(model="llama3.2", input="Hi", stream=True)
    events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hello there!"
    assert "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta") == \
        "They greet me."
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.output_text == "Hello there!"


def test_the_stream_helper_accumulates_text_and_usage(sdk: Any) -> None:
    with sdk(Proxy(HELLO)).responses.stream(model="llama3.2", input="Hi") as stream:
        snapshots = [event.snapshot for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert snapshots == ["Hello", "Hello there!"]
    assert final.output_text == "Hello there!"
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.total_tokens) == (21, 6, 27)
    reasoning = final.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "They greet me."


def test_the_stream_helper_returns_the_function_calls(sdk: Any) -> None:
    proxy = Proxy(CALLS)
    with sdk(proxy).responses.stream(model="llama3.2", input="Weather in Paris and Rome?", tools=[WEATHER],
                                     tool_choice="auto") as stream:
        snapshots = [event.snapshot for event in stream if event.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.name, orjson.loads(c.arguments)) for c in calls] == [("weather", {"city": "Paris"}),
                                                                     ("weather", {"city": "Rome"})]
    assert [orjson.loads(s) for s in snapshots] == [{"city": "Paris"}, {"city": "Rome"}]
    assert len({c.call_id for c in calls}) == 2 and all(c.status == "completed" for c in calls)
    assert proxy.native_body["tools"][0]["function"]["name"] == "weather"


def test_a_tool_round_trip_sends_the_outputs_back(sdk: Any) -> None:
    client = sdk(Proxy([line(done=True, tool_calls=TWO_CALLS)]))
    first = client.responses.create(model="llama3.2", input="Weather in Paris and Rome?", tools=[WEATHER])
    outputs = [{"type": "function_call_output", "call_id": item.call_id, "output": "sunny"}
               for item in first.output if item.type == "function_call"]
    answer = Proxy([line(done=True, content="Sunny in both.")])
    second = sdk(answer).responses.create(
        model="llama3.2", tools=[WEATHER],
        input=[{"role": "user", "content": "Weather in Paris and Rome?"},
               *[item.model_dump(exclude_none=True) for item in first.output], *outputs])
    assert second.output_text == "Sunny in both."
    messages = answer.native_body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert [m["tool_name"] for m in messages[2:]] == ["weather", "weather"]
    assert [call["function"]["arguments"] for call in messages[1]["tool_calls"]] == [{"city": "Paris"},
                                                                                    {"city": "Rome"}]
    assert [m["tool_call_id"] for m in messages[2:]] == [call["id"] for call in messages[1]["tool_calls"]]


def test_an_error_mid_stream_raises(sdk: Any) -> None:
    lines = [line(content="Hal"), {"error": "model runner crashed"}]
    events: list[str] = []
    with pytest.raises(openai.APIError, match="model runner crashed"):
        for event in sdk(Proxy(lines)).responses.create(model="llama3.2", input="Hi", stream=True):
            events.append(event.type)
    assert events[-1] == "response.failed"
    with pytest.raises(openai.APIError, match="model runner crashed"), \
            sdk(Proxy(lines)).responses.stream(model="llama3.2", input="Hi") as stream:
        stream.get_final_response()


def test_an_aborted_stream_raises(sdk: Any) -> None:
    proxy = Proxy([line(content="Hal")], abort=("backend 'gpu' stopped answering", 502))
    with pytest.raises(openai.APIError, match="stopped answering"), \
            sdk(proxy).responses.stream(model="llama3.2", input="Hi") as stream:
        stream.until_done()


def test_a_stream_cut_by_the_token_limit_ends_incomplete(sdk: Any) -> None:
    proxy = Proxy([line(content="Once upon"), line(done=True, reason="length")])
    with sdk(proxy).responses.stream(model="llama3.2", input="Tell a story", max_output_tokens=3) as stream:
        last = list(stream)[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.output_text == "Once upon"
