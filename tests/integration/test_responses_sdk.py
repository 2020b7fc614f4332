"""OpenAI's Responses API end to end: the official `openai` SDK's `responses` through the real proxy against
the simulator.

The proxy keeps no state: each request carries the whole conversation, and what needs stored responses is
refused with a 400 that says what to send instead. What reached "Ollama" is read from the simulator: a
native `/api/chat` with `options.num_ctx` sized, never its own `/v1/responses` (which cannot take one).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import openai
import pytest
from test_anthropic_sdk import assert_sized
from test_openai_sdk import native_body, reached_v1, sdk_options

from ollama_proxy.sim import Fault, SimServer

WEATHER: Any = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture
async def client(proxy: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(**sdk_options(proxy + "/v1")) as sdk:
        yield sdk


async def test_create_is_a_sized_native_chat_and_back(client: openai.AsyncOpenAI, sim: SimServer) -> None:
    raw = await client.responses.with_raw_response.create(model="llama3.2", instructions="You are terse.",
                                                          input="Hello there, how are you?",
                                                          max_output_tokens=300, temperature=0.2)
    reply = raw.parse()
    assert reply.object == "response" and reply.id.startswith("resp_") and reply.status == "completed"
    assert reply.model == "llama3.2" and [item.type for item in reply.output] == ["message"]
    assert reply.output_text.endswith(".") and reply.instructions == "You are terse."
    body = assert_sized(raw.headers, sim)
    assert body["messages"] == [{"role": "system", "content": "You are terse."},
                                {"role": "user", "content": "Hello there, how are you?"}]
    assert {k: v for k, v in body["options"].items() if k != "num_ctx"} == {"num_predict": 300, "temperature": 0.2}
    prompt = sim.state.stats.last_prompt["llama3.2:latest"]
    assert reply.usage is not None and reply.usage.input_tokens == prompt["kept"] == prompt["tokens"]
    assert reply.usage.total_tokens == reply.usage.input_tokens + reply.usage.output_tokens


async def test_max_output_tokens_makes_an_incomplete_response(client: openai.AsyncOpenAI) -> None:
    reply = await client.responses.create(model="llama3.2", input="Tell me a story", max_output_tokens=2)
    assert reply.status == "incomplete" and reply.incomplete_details is not None
    assert reply.incomplete_details.reason == "max_output_tokens"
    assert reply.usage is not None and reply.usage.output_tokens == 2


async def test_stream_gives_the_event_sequence(client: openai.AsyncOpenAI, sim: SimServer) -> None:
    async with client.responses.with_streaming_response.create(model="qwen3:4b", input="Hello there",
                                                               stream=True) as raw:
        headers = raw.headers
        events = [event async for event in await raw.parse()]
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    for kind in ("response.output_item.added", "response.content_part.added", "response.output_text.done",
                 "response.output_item.done"):
        assert kind in kinds
    numbers = [event.sequence_number for event in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    final = events[-1].response  # type: ignore[union-attr]
    assert len(deltas) > 1 and final.output_text == "".join(deltas) and final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens == len(deltas)
    assert final.usage.input_tokens == sim.state.stats.last_prompt["qwen3:4b"]["kept"]
    assert assert_sized(headers, sim)["stream"] is True


@pytest.mark.parametrize("stream", [pytest.param(False, id="whole"), pytest.param(True, id="streamed")])
async def test_function_call_and_output_round_trip(client: openai.AsyncOpenAI, sim: SimServer, stream: bool) -> None:
    # The simulated model calls a tool that the last user message names ("weather" for get_weather).
    asked: list[Any] = [{"role": "user", "content": "What is the weather in Oslo?"}]
    if stream:
        events = [e async for e in await client.responses.create(model="qwen3:4b", input=asked, tools=[WEATHER],
                                                                 stream=True)]
        kinds = [event.type for event in events]
        assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
        arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
        reply = events[-1].response  # type: ignore[union-attr]
    else:
        reply = await client.responses.create(model="qwen3:4b", input=asked, tools=[WEATHER])
    call = next(item for item in reply.output if item.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"}
    if stream:
        assert json.loads(arguments) == {"city": "Oslo"}
    assert native_body(sim, "/api/chat")["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": WEATHER["description"], "parameters": WEATHER["parameters"]}}]

    answered = await client.responses.create(model="qwen3:4b", tools=[WEATHER], input=[
        *asked, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "12 C, rain"}])
    assert [item.type for item in answered.output] == ["message"] and answered.output_text
    history = native_body(sim, "/api/chat")["messages"]
    called = history[1]["tool_calls"][0]["function"]
    assert history[1]["role"] == "assistant" and (called["name"], called["arguments"]) == ("get_weather",
                                                                                            {"city": "Oslo"})
    assert history[2]["role"] == "tool" and history[2]["content"] == "12 C, rain"
    assert reached_v1(sim) == []


@pytest.mark.parametrize(("extra", "fragment"), [
    pytest.param({"previous_response_id": "resp_123"}, "previous_response_id", id="previous_response_id"),
    pytest.param({"store": True}, "store", id="store"),
    pytest.param({"background": True}, "background", id="background"),
    pytest.param({"conversation": "conv_123"}, "conversation", id="conversation"),
])
async def test_stateful_requests_are_refused_clearly(client: openai.AsyncOpenAI, sim: SimServer,
                                                     extra: dict[str, Any], fragment: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model="llama3.2", input="Hi", **extra)
    assert fragment in info.value.message and "stateless" in info.value.message
    assert isinstance(info.value.body, dict) and info.value.body["type"] == "invalid_request_error"
    assert sim.state.stats.requests["/api/chat"] == 0 and reached_v1(sim) == []


@pytest.mark.parametrize(("extra", "fragment"), [
    pytest.param({"tools": [{"type": "web_search"}]}, "tools[0]", id="hosted-tool"),
    pytest.param({"input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "https://example.com/cat.png"}]}]}, "image", id="url-image"),
    pytest.param({"input": [{"type": "function_call_output", "call_id": "call_1", "output": "x"}]}, "call_1",
                 id="orphan-function-output"),
])
async def test_what_cannot_be_served_is_a_bad_request(client: openai.AsyncOpenAI, sim: SimServer,
                                                      extra: dict[str, Any], fragment: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(**({"model": "llama3.2", "input": "Hi"} | extra))
    assert fragment in info.value.message
    assert sim.state.stats.requests["/api/chat"] == 0


async def test_unknown_model_is_not_found(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await client.responses.create(model="no-such-model", input="Hi")
    assert "no-such-model" in info.value.message


async def test_invalid_json_is_an_openai_shaped_400(proxy: str) -> None:
    async with aiohttp.ClientSession() as session, \
            session.post(f"{proxy}/v1/responses", data=b"{not json") as response:
        assert response.status == 400
        body = await response.json()
    assert body["error"]["type"] == "invalid_request_error"


async def test_backend_dying_mid_stream_makes_the_sdk_raise(client: openai.AsyncOpenAI, sim: SimServer) -> None:
    sim.state.faults.set(Fault("drop_mid_stream", count=1, after_chunks=2, paths=("/api/chat",)))
    seen: list[str] = []
    with pytest.raises(openai.APIError):
        async for event in await client.responses.create(model="llama3.2", input="Tell me a story", stream=True):
            seen.append(event.type)
    assert "response.output_text.delta" in seen and "response.completed" not in seen
    again = await client.responses.create(model="llama3.2", input="Hi")
    assert again.status == "completed"


async def test_openai_type_backend_gets_chat_completions(sim: SimServer, proxy_factory: Callable[..., Any]) -> None:
    url = await proxy_factory({"backends": [{"id": "sim", "type": "openai", "endpoint": sim.url}]})
    async with openai.AsyncOpenAI(**sdk_options(url + "/v1")) as sdk:
        whole = await sdk.responses.create(model="llama3.2", instructions="Be brief.", input="Hello")
        events = [e async for e in await sdk.responses.create(model="llama3.2", input="Hello", stream=True)]
    assert whole.status == "completed" and whole.output_text
    assert events[-1].type == "response.completed" and events[-1].response.output_text  # type: ignore[union-attr]
    stats = sim.state.stats.requests
    assert stats["/v1/chat/completions"] == 2 and stats["/v1/responses"] == 0 and stats["/api/chat"] == 0
