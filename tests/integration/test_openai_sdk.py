"""The OpenAI layer end to end: the official `openai` SDK (sync and async) through the real proxy
against the simulator.

The SDK parses every reply into its own models, so a shape it cannot read fails here. What reached
"Ollama" is read from the simulator's state: the proxy must have translated each `/v1` request into
a native call, so the simulator's own `/v1` layer must never see one. Sync calls run in a thread,
because the proxy and the simulator share the test's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import openai
import pytest

from ollama_proxy.sim import Fault, SimServer

CHAT = [{"role": "user", "content": "Hello there, how are you?"}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def sdk_options(base_url: str) -> dict[str, Any]:
    # No retries: a retried failure would hide the first answer, and cost time.
    return {"base_url": base_url, "api_key": "x", "max_retries": 0, "timeout": 30.0}


@pytest.fixture
async def client(proxy: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(**sdk_options(proxy + "/v1")) as sdk:
        yield sdk


@pytest.fixture
def sync_client(proxy: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(**sdk_options(proxy + "/v1")) as sdk:
        yield sdk


def native_body(sim: SimServer, path: str) -> dict[str, Any]:
    """The last body the simulator received on `path`."""
    body = sim.state.stats.last_body.get(path)
    assert isinstance(body, dict), f"nothing reached {path}: {sorted(sim.state.stats.last_body)}"
    return body


def without_num_ctx(options: dict[str, Any]) -> dict[str, Any]:
    """The options the client's fields became; num_ctx is the proxy's (bare paths are sized)."""
    assert isinstance(options.get("num_ctx"), int)
    return {k: v for k, v in options.items() if k != "num_ctx"}


def reached_v1(sim: SimServer) -> list[str]:
    return [path for path in sim.state.stats.requests if path.startswith("/v1/")]


async def test_chat_sync_and_async_streamed_and_not_agree(client: openai.AsyncOpenAI, sync_client: openai.OpenAI,
                                                          sim: SimServer) -> None:
    whole = await asyncio.to_thread(sync_client.chat.completions.create, model="llama3.2", messages=CHAT)
    assert whole.object == "chat.completion" and whole.id.startswith("chatcmpl-")
    assert whole.model == "llama3.2"
    choice = whole.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert whole.usage is not None and whole.usage.prompt_tokens > 0 and whole.usage.completion_tokens > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    chunks = [chunk async for chunk in await client.chat.completions.create(
        model="llama3.2", messages=CHAT, stream=True, stream_options={"include_usage": True})]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({chunk.id for chunk in chunks}) == 1 and chunks[0].id != whole.id
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == choice.message.content
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons == [None] * (len(reasons) - 1) + ["stop"]
    # The usage chunk comes last, with no choices, and counts what the non-streamed call counted.
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert reached_v1(sim) == []


async def test_sync_stream_without_usage_has_no_usage_chunk(sync_client: openai.OpenAI) -> None:
    def collect() -> list[Any]:
        with sync_client.chat.completions.create(model="llama3.2", messages=CHAT, stream=True) as stream:
            return list(stream)

    chunks = await asyncio.to_thread(collect)
    assert all(chunk.usage is None and len(chunk.choices) == 1 for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].choices[0].delta.content is None


async def test_stream_ends_with_done_marker(proxy: str) -> None:
    # The SDK stops quietly at [DONE] and also at a bare end of stream, so look at the bytes.
    async with aiohttp.ClientSession() as session, session.post(f"{proxy}/v1/chat/completions", json={
            "model": "llama3.2", "messages": CHAT, "stream": True}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        raw = await response.read()
    events = [event for event in raw.decode().split("\n\n") if event]
    assert events[-1] == "data: [DONE]"
    assert all(event.startswith("data: {") for event in events[:-1])


async def test_text_completions(client: openai.AsyncOpenAI, sync_client: openai.OpenAI, sim: SimServer) -> None:
    whole = await asyncio.to_thread(sync_client.completions.create, model="qwen3:4b",
                                    prompt="Count to three", max_tokens=5)
    assert whole.object == "text_completion" and whole.id.startswith("cmpl-")
    assert whole.choices[0].finish_reason == "length" and whole.choices[0].text
    assert whole.usage is not None and whole.usage.completion_tokens == 5
    assert without_num_ctx(native_body(sim, "/api/generate")["options"]) == {"num_predict": 5}

    chunks = [chunk async for chunk in await client.completions.create(
        model="qwen3:4b", prompt="Count to three", max_tokens=5, stream=True)]
    assert "".join(chunk.choices[0].text for chunk in chunks) == whole.choices[0].text
    assert [chunk.choices[0].finish_reason for chunk in chunks][-1] == "length"
    assert reached_v1(sim) == []


async def test_tool_call_round_trip(client: openai.AsyncOpenAI, sim: SimServer) -> None:
    question = [{"role": "user", "content": "What is the weather in Oslo"}]
    reply = await client.chat.completions.create(model="qwen3:4b", messages=question, tools=[WEATHER_TOOL])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id and call.function.name == "get_weather"
    assert isinstance(call.function.arguments, str) and json.loads(call.function.arguments) == {"city": "Oslo"}

    # The answer goes back as OpenAI sends it (arguments as a JSON string); Ollama wants an object.
    follow_up = [*question, choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "12 degrees and rain"}]
    answer = await client.chat.completions.create(model="qwen3:4b", messages=follow_up, tools=[WEATHER_TOOL])
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.content
    sent = native_body(sim, "/api/chat")["messages"]
    function = sent[1]["tool_calls"][0]["function"]
    assert (function["name"], function["arguments"]) == ("get_weather", {"city": "Oslo"})
    assert sent[2]["role"] == "tool" and sent[2]["content"] == "12 degrees and rain"


async def test_tool_call_streamed(client: openai.AsyncOpenAI) -> None:
    chunks = [chunk async for chunk in await client.chat.completions.create(
        model="qwen3:4b", messages=[{"role": "user", "content": "weather in Paris"}], tools=[WEATHER_TOOL],
        stream=True)]
    calls = [call for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].id
    assert calls[0].function is not None and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments or "") == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_embeddings_float_and_base64(client: openai.AsyncOpenAI, ollama_client: Any, proxy: str,
                                           sim: SimServer) -> None:
    texts = ["first text", "second text"]
    floats = await client.embeddings.create(model="nomic-embed-text", input=texts, encoding_format="float")
    assert [item.index for item in floats.data] == [0, 1]
    assert all(math.isclose(math.hypot(*item.embedding), 1.0, rel_tol=1e-6) for item in floats.data)
    assert floats.usage.prompt_tokens > 0
    native = await ollama_client(proxy).embed(model="nomic-embed-text", input=texts)
    assert [item.embedding for item in floats.data] == [list(vector) for vector in native.embeddings]

    # Left unset, the SDK asks for base64 and decodes it itself (float32 precision).
    decoded = await client.embeddings.create(model="nomic-embed-text", input=texts)
    assert native_body(sim, "/api/embed")["input"] == texts
    for got, want in zip(decoded.data, floats.data, strict=True):
        assert got.embedding == pytest.approx(want.embedding, abs=1e-6)

    raw = await client.embeddings.create(model="nomic-embed-text", input="first text", encoding_format="base64")
    encoded = raw.data[0].embedding
    assert isinstance(encoded, str)
    vector = struct.unpack(f"<{len(base64.b64decode(encoded)) // 4}f", base64.b64decode(encoded))
    assert list(vector) == pytest.approx(floats.data[0].embedding, abs=1e-6)


async def test_models_list_and_retrieve(client: openai.AsyncOpenAI, sync_client: openai.OpenAI) -> None:
    listed = [model async for model in client.models.list()]
    assert {model.id for model in listed} == {"llama3.2:latest", "qwen3:4b", "nomic-embed-text:latest"}
    assert all(model.object == "model" and model.created > 0 for model in listed)
    found = await asyncio.to_thread(sync_client.models.retrieve, "llama3.2")
    assert found.id == "llama3.2:latest" and found.owned_by == "library"
    with pytest.raises(openai.NotFoundError) as info:
        await client.models.retrieve("no-such-model")
    assert "no-such-model" in info.value.message


@pytest.mark.parametrize("stream", [pytest.param(False, id="whole"), pytest.param(True, id="streamed")])
async def test_unknown_model_is_not_found(client: openai.AsyncOpenAI, stream: bool) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(model="no-such-model", messages=CHAT, stream=stream)
    assert "no-such-model" in info.value.message
    assert isinstance(info.value.body, dict) and info.value.body["type"] == "not_found_error"


@pytest.mark.parametrize(("extra", "fragment"), [
    pytest.param({"temperature": 3}, "temperature", id="temperature-out-of-range"),
    pytest.param({"n": 2}, "'n'", id="several-choices"),
    pytest.param({"tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": [WEATHER_TOOL]},
                 "tool_choice", id="unknown-tool-choice"),
    pytest.param({"response_format": {"type": "xml"}}, "response_format", id="bad-response-format"),
])
async def test_malformed_request_is_bad_request(client: openai.AsyncOpenAI, sim: SimServer,
                                                extra: dict[str, Any], fragment: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="llama3.2", messages=CHAT, **extra)
    assert fragment in info.value.message
    assert isinstance(info.value.body, dict) and info.value.body["type"] == "invalid_request_error"
    assert sim.state.stats.requests["/api/chat"] == 0


async def test_invalid_json_is_an_openai_shaped_400(proxy: str) -> None:
    async with aiohttp.ClientSession() as session, \
            session.post(f"{proxy}/v1/chat/completions", data=b"{not json") as response:
        assert response.status == 400
        body = await response.json()
    assert body["error"]["type"] == "invalid_request_error" and "invalid JSON" in body["error"]["message"]


async def test_backend_dying_mid_stream_makes_the_sdk_raise(client: openai.AsyncOpenAI, sim: SimServer) -> None:
    sim.state.faults.set(Fault("drop_mid_stream", count=1, after_chunks=2, paths=("/api/chat",)))
    seen: list[Any] = []
    with pytest.raises(openai.APIError) as info:
        async for chunk in await client.chat.completions.create(
                model="llama3.2", messages=[{"role": "user", "content": "tell me a long story"}], stream=True):
            seen.append(chunk)
    assert seen and all(chunk.choices[0].finish_reason is None for chunk in seen)
    assert "sim" in info.value.message
    # and the proxy keeps serving
    again = await client.chat.completions.create(model="llama3.2", messages=CHAT)
    assert again.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(("extra", "options"), [
    pytest.param({}, {}, id="nothing-sent-nothing-set"),
    pytest.param({"max_tokens": 7}, {"num_predict": 7}, id="max_tokens"),
    pytest.param({"max_completion_tokens": 9}, {"num_predict": 9}, id="max_completion_tokens"),
    pytest.param({"max_tokens": 7, "max_completion_tokens": 9}, {"num_predict": 9}, id="newer-field-wins"),
    pytest.param({"temperature": 0.2, "top_p": 0.5, "seed": 3, "stop": "END"},
                 {"temperature": 0.2, "top_p": 0.5, "seed": 3, "stop": ["END"]}, id="sampling"),
])
async def test_options_reach_ollama_as_sent(client: openai.AsyncOpenAI, sim: SimServer,
                                            extra: dict[str, Any], options: dict[str, Any]) -> None:
    await client.chat.completions.create(model="llama3.2", messages=CHAT, **extra)
    body = native_body(sim, "/api/chat")
    # Ollama's own /v1 layer would send temperature and top_p 1.0 here, overriding the Modelfile.
    assert without_num_ctx(body["options"]) == options
    assert body["stream"] is False


async def test_auto_context_reaches_ollama_as_num_ctx(proxy: str, sim: SimServer) -> None:
    async with openai.AsyncOpenAI(**sdk_options(proxy + "/proxy-context/auto/v1")) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(model="llama3.2", messages=CHAT, max_tokens=50)
        reply = raw.parse()
        assert reply.choices[0].message.content
        size = int(raw.headers["X-Proxy-Context-Size"])
        assert native_body(sim, "/api/chat")["options"] == {"num_predict": 50, "num_ctx": size}
        assert size in (2048, 4096, 8192, 16384, 32768)
        assert raw.headers["X-Proxy-Context-Reason"] == "fits-bucket"
        assert 0 < int(raw.headers["X-Proxy-Context-Input-Tokens"]) < int(raw.headers["X-Proxy-Context-Required"])

        async with sdk.completions.with_streaming_response.create(
                model="qwen3:4b", prompt="Count to three", stream=True) as streamed:
            assert streamed.headers["X-Proxy-Context-Size"] == str(
                native_body(sim, "/api/generate")["options"]["num_ctx"])
            assert [line async for line in streamed.iter_lines() if line][-1] == "data: [DONE]"
    assert reached_v1(sim) == []


async def test_fixed_context_route_sets_that_size(proxy: str, sim: SimServer) -> None:
    async with openai.AsyncOpenAI(**sdk_options(proxy + "/proxy-context/8192/v1")) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(model="llama3.2", messages=CHAT, stream=True)
        chunks = [chunk async for chunk in raw.parse()]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert raw.headers["X-Proxy-Context-Size"] == "8192"
    assert raw.headers["X-Proxy-Context-Reason"] == "fixed-route"
    assert native_body(sim, "/api/chat")["options"] == {"num_ctx": 8192}


async def test_bare_v1_path_is_sized_unless_the_client_sizes_it(client: openai.AsyncOpenAI, sim: SimServer) -> None:
    raw = await client.chat.completions.with_raw_response.create(model="llama3.2", messages=CHAT)
    assert native_body(sim, "/api/chat")["options"]["num_ctx"] == int(raw.headers["X-Proxy-Context-Size"])
    own = await client.chat.completions.with_raw_response.create(model="llama3.2", messages=CHAT,
                                                                 extra_body={"options": {"num_ctx": 3000}})
    assert "X-Proxy-Context-Size" not in own.headers
    assert native_body(sim, "/api/chat")["options"]["num_ctx"] == 3000
