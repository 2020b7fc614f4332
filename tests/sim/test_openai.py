"""Ollama's /v1 layer as the simulator serves it, through the official `openai` client and raw HTTP."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from ollama_proxy.sim import SimServer
from tests.sim.conftest import MakeSim, call, stats

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def client(sim: SimServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="unused") as client:
        yield client


async def test_chat_completion(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(model="llama3.2", messages=HI, max_tokens=3)
    assert reply.object == "chat.completion" and reply.system_fingerprint == "fp_ollama"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    assert reply.id.startswith("chatcmpl-") and int(reply.id.split("-")[1]) < 999


async def test_chat_stream_with_usage(sim: SimServer, http: aiohttp.ClientSession) -> None:
    body = {"model": "llama3.2", "stream": True, "stream_options": {"include_usage": True}, "messages": HI}
    async with http.post(sim.url + "/v1/chat/completions", json=body) as r:
        assert r.content_type == "text/event-stream"
        events = [line.strip() async for line in r.content if line.strip()]
    assert events[-1] == b"data: [DONE]"
    assert all(e.startswith(b"data: ") for e in events)


async def test_chat_stream_through_openai_client(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model="llama3.2", messages=HI, stream=True,
                                                  stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-2].choices[0].delta.content is None
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens == len([c for c in chunks[:-2]])
    assert text.endswith(".")


async def test_tool_calls_finish_reason(client: openai.AsyncOpenAI) -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    reply = await client.chat.completions.create(
        model="qwen3:4b", tools=[tool], messages=[{"role": "user", "content": "Weather in Oslo?"}])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    [tool_call] = choice.message.tool_calls or []
    assert tool_call.function.arguments == '{"city":"Oslo"}'


async def test_num_ctx_and_options_are_ignored_and_temperature_defaults(
        client: openai.AsyncOpenAI, sim: SimServer, http: aiohttp.ClientSession) -> None:
    await client.chat.completions.create(model="llama3.2", messages=HI,
                                         extra_body={"num_ctx": 32768, "options": {"num_ctx": 32768}})
    seen = await stats(http, sim)
    assert seen["last_options"] == {"temperature": 1.0, "top_p": 1.0}
    assert seen["loaded"]["llama3.2:latest"]["context_length"] == 4096


async def test_completions(client: openai.AsyncOpenAI) -> None:
    reply = await client.completions.create(model="llama3.2", prompt="Once upon", max_tokens=4)
    assert reply.object == "text_completion" and reply.choices[0].finish_reason == "length"
    chunks = [c async for c in await client.completions.create(model="llama3.2", prompt="Once", stream=True)]
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_embeddings_float_and_base64(client: openai.AsyncOpenAI, sim: SimServer,
                                           http: aiohttp.ClientSession) -> None:
    reply = await client.embeddings.create(model="nomic-embed-text", input=["a", "b"],
                                           encoding_format="float")
    assert [d.index for d in reply.data] == [0, 1] and len(reply.data[0].embedding) == 768
    status, raw = await call(http, sim, "POST", "/v1/embeddings", {"model": "nomic-embed-text", "input": "a",
                                                                  "encoding_format": "base64"})
    decoded = struct.unpack("<768f", base64.b64decode(raw["data"][0]["embedding"]))
    assert status == 200 and abs(decoded[0] - reply.data[0].embedding[0]) < 1e-6
    empty = {"model": "nomic-embed-text", "input": []}
    assert (await call(http, sim, "POST", "/v1/embeddings", empty))[0] == 400


async def test_models_and_404(client: openai.AsyncOpenAI) -> None:
    ids = [m.id async for m in client.models.list()]
    assert ids == ["llama3.2:latest", "qwen3:4b", "nomic-embed-text:latest"]
    assert (await client.models.retrieve("qwen3:4b")).owned_by == "library"
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(model="nope", messages=HI)
    assert info.value.body == {"message": "model 'nope' not found", "type": "not_found_error",
                               "param": None, "code": None}


async def test_empty_messages_is_400(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="too short"):
        await client.chat.completions.create(model="llama3.2", messages=[])


async def test_no_models_lists_null(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(models=[])
    assert await call(http, sim, "GET", "/v1/models") == (200, {"object": "list", "data": None})
