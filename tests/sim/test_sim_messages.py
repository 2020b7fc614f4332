"""The simulator's Anthropic (`/v1/messages`) and Responses (`/v1/responses`) layers, through the official
`anthropic` and `openai` SDKs and raw HTTP: what a current Ollama answers there, and what it drops."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from ollama_proxy.sim import SimServer
from tests.sim.conftest import call, stats

WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
FUNCTION = {"type": "function", "name": "get_weather", "parameters": WEATHER["input_schema"]}


@pytest.fixture
async def claude(sim: SimServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=sim.url, api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture
async def client(sim: SimServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def chat_reached(sim: SimServer) -> dict[str, Any]:
    options = sim.state.stats.last_options
    assert options is not None
    return options


async def test_message_and_what_the_layer_sends_the_model(claude: anthropic.AsyncAnthropic, sim: SimServer) -> None:
    reply = await claude.messages.create(model="llama3.2", max_tokens=3, system=[{"type": "text", "text": "Be brief"}],
                                         messages=[{"role": "user", "content": "hi"}],
                                         extra_body={"options": {"num_ctx": 65536}})
    assert reply.type == "message" and reply.id.startswith("msg_") and reply.role == "assistant"
    assert reply.stop_reason == "max_tokens" and reply.usage.output_tokens == 3
    assert reply.content[0].type == "text" and reply.content[0].text
    # max_tokens became num_predict; the layer has no way to take num_ctx, so the server default holds.
    assert chat_reached(sim) == {"num_predict": 3}
    assert sim.state.stats.last_prompt["llama3.2:latest"]["num_ctx"] == 4096
    assert reply.usage.input_tokens == sim.state.stats.last_prompt["llama3.2:latest"]["kept"]


async def test_message_stream_events_in_order(claude: anthropic.AsyncAnthropic) -> None:
    async with claude.messages.stream(model="llama3.2", max_tokens=100,
                                      messages=[{"role": "user", "content": "hello"}]) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds[1] == "content_block_start" and kinds[-3:-1] == ["content_block_stop", "message_delta"]
    assert final.stop_reason == "end_turn" and final.content[0].type == "text" and final.content[0].text
    assert final.usage.output_tokens == kinds.count("text")


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_use_and_tool_result_round_trip(claude: anthropic.AsyncAnthropic, sim: SimServer,
                                                   stream: bool) -> None:
    asked: Any = [{"role": "user", "content": "Weather in Oslo?"}]
    if stream:
        async with claude.messages.stream(model="qwen3:4b", max_tokens=200, tools=[WEATHER], messages=asked) as s:
            reply = await s.get_final_message()
    else:
        reply = await claude.messages.create(model="qwen3:4b", max_tokens=200, tools=[WEATHER], messages=asked)
    assert reply.stop_reason == "tool_use"
    use = next(block for block in reply.content if block.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Oslo"} and use.id.startswith("toolu_")
    answered = await claude.messages.create(model="qwen3:4b", max_tokens=200, tools=[WEATHER], messages=[
        *asked, {"role": "assistant", "content": [use.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "12 C"}]}])
    assert answered.stop_reason == "end_turn" and answered.content[0].type == "text"
    sent = sim.state.stats.last_body["/v1/messages"]["messages"]
    assert sent[-1]["content"][0]["tool_use_id"] == use.id


async def test_message_errors_are_anthropic_shaped(claude: anthropic.AsyncAnthropic, sim: SimServer,
                                                   http: aiohttp.ClientSession) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        await claude.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body == {"type": "error", "error": {"type": "not_found_error",
                                                             "message": "model 'nope' not found"}}
    status, body = await call(http, sim, "POST", "/v1/messages",
                              {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 400 and body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]
    status, body = await call(http, sim, "POST", "/v1/messages", {"model": "llama3.2", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x/a.png"}}]}]})
    assert status == 400 and body["error"]["message"] == "invalid image source"


async def test_response_and_what_the_layer_sends_the_model(client: openai.AsyncOpenAI, sim: SimServer) -> None:
    reply = await client.responses.create(model="llama3.2", instructions="Be brief", input="hi",
                                          max_output_tokens=4, extra_body={"options": {"num_ctx": 65536}})
    assert reply.object == "response" and reply.id.startswith("resp_") and reply.status == "incomplete"
    assert reply.output_text and reply.usage is not None and reply.usage.output_tokens == 4
    assert chat_reached(sim) == {"temperature": 1.0, "top_p": 1.0, "num_predict": 4}
    assert sim.state.stats.last_prompt["llama3.2:latest"]["num_ctx"] == 4096
    messages = sim.state.stats.last_body["/v1/responses"]
    assert messages["instructions"] == "Be brief"


async def test_response_stream_events(client: openai.AsyncOpenAI) -> None:
    events = [event async for event in await client.responses.create(model="llama3.2", input="hello", stream=True)]
    kinds = [event.type for event in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-1] == "response.completed" and [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response  # type: ignore[union-attr]
    assert deltas and final.output_text == deltas and final.usage.output_tokens == kinds.count(
        "response.output_text.delta")


@pytest.mark.parametrize("stream", [False, True])
async def test_function_call_and_output_round_trip(client: openai.AsyncOpenAI, sim: SimServer, stream: bool) -> None:
    asked: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    if stream:
        events = [e async for e in await client.responses.create(model="qwen3:4b", input=asked, tools=[FUNCTION],
                                                                 stream=True)]
        assert "response.function_call_arguments.delta" in [e.type for e in events]
        reply = events[-1].response  # type: ignore[union-attr]
    else:
        reply = await client.responses.create(model="qwen3:4b", input=asked, tools=[FUNCTION])
    call_item = next(item for item in reply.output if item.type == "function_call")
    assert call_item.name == "get_weather" and call_item.arguments == '{"city":"Oslo"}'
    answered = await client.responses.create(model="qwen3:4b", tools=[FUNCTION], input=[
        *asked, call_item.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call_item.call_id, "output": "12 C"}])
    assert [item.type for item in answered.output] == ["message"] and answered.output_text
    prompt = sim.state.stats.last_prompt["qwen3:4b"]
    assert prompt["tokens"] == prompt["kept"]


async def test_responses_counts_and_errors(client: openai.AsyncOpenAI, sim: SimServer,
                                           http: aiohttp.ClientSession) -> None:
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="nope", input="hi")
    status, body = await call(http, sim, "POST", "/v1/responses", {"model": "llama3.2", "input": [
        {"role": "user", "content": [{"type": "input_image", "image_url": "http://x/a.png"}]}]})
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    counted = (await stats(http, sim))["requests"]
    assert counted["/v1/responses"] == 2 and "/api/chat" not in counted
