"""The Anthropic Messages API end to end: the official `anthropic` SDK through the real proxy against the
simulator.

The SDK parses every reply and every stream event into its own models, so a shape it cannot read fails here.
What reached "Ollama" is read from the simulator: the proxy must have translated each `/v1/messages`
request into a native `/api/chat` with `options.num_ctx` sized (Ollama's own Anthropic layer cannot take
one), so the simulator's `/v1/messages` must never see a request. `count_tokens` is the proxy's own answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anthropic
import pytest
from test_openai_sdk import native_body, reached_v1, sdk_options

from ollama_proxy.core.context import build_tokenizer
from ollama_proxy.sim import Fault, ModelSpec, SimServer
from ollama_proxy.testing.tiny_gguf import vocabulary

HELLO: Any = [{"role": "user", "content": "Hello there, how are you?"}]
WEATHER: Any = {"name": "get_weather", "description": "Current weather in a city", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
SIZES = (2048, 4096, 8192, 16384, 32768, 65536, 131072)


@pytest.fixture
async def claude(proxy: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(**sdk_options(proxy)) as sdk:
        yield sdk


def assert_sized(headers: Any, sim: SimServer) -> dict[str, Any]:
    """The native chat the simulator got, its num_ctx the size the proxy's headers announce."""
    body = native_body(sim, "/api/chat")
    size = int(headers["X-Proxy-Context-Size"])
    assert body["options"]["num_ctx"] == size and size in SIZES
    assert 0 < int(headers["X-Proxy-Context-Input-Tokens"]) < int(headers["X-Proxy-Context-Required"]) <= size
    assert headers["X-Proxy-Context-Reason"] in ("fits-bucket", "reused-loaded")
    assert reached_v1(sim) == []
    return body


async def test_create_is_a_sized_native_chat_and_back(claude: anthropic.AsyncAnthropic, sim: SimServer) -> None:
    raw = await claude.messages.with_raw_response.create(
        model="llama3.2", max_tokens=300, system="You are terse.", messages=HELLO, stop_sequences=["END"],
        # The 2.x SDK has no sampling arguments any more; other clients still send them.
        extra_body={"temperature": 0.2}, extra_headers={"anthropic-version": "2023-06-01"})
    reply = await raw.parse()
    assert reply.type == "message" and reply.role == "assistant" and reply.id.startswith("msg_")
    assert reply.model == "llama3.2" and reply.stop_reason == "end_turn"
    assert [block.type for block in reply.content] == ["text"] and reply.content[0].text.endswith(".")
    body = assert_sized(raw.headers, sim)
    assert body["messages"] == [{"role": "system", "content": "You are terse."}, HELLO[0]]
    assert {k: v for k, v in body["options"].items() if k != "num_ctx"} == {
        "num_predict": 300, "temperature": 0.2, "stop": ["END"]}
    prompt = sim.state.stats.last_prompt["llama3.2:latest"]
    assert reply.usage.input_tokens == prompt["kept"] == prompt["tokens"] and reply.usage.output_tokens > 0


async def test_stream_gives_text_deltas_and_the_final_message(claude: anthropic.AsyncAnthropic,
                                                               sim: SimServer) -> None:
    async with claude.messages.stream(model="qwen3:4b", max_tokens=500, messages=HELLO) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
        headers = stream.response.headers
    # (the SDK swallows the `ping` the proxy sends after message_start)
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    deltas = kinds.count("text")
    assert deltas == final.usage.output_tokens and deltas > 1
    assert final.stop_reason == "end_turn" and final.content[0].type == "text" and final.content[0].text
    assert final.usage.input_tokens == sim.state.stats.last_prompt["qwen3:4b"]["kept"]
    assert headers["content-type"].startswith("text/event-stream")
    assert assert_sized(headers, sim)["stream"] is True


@pytest.mark.parametrize("stream", [pytest.param(False, id="whole"), pytest.param(True, id="streamed")])
async def test_tool_use_and_tool_result_round_trip(claude: anthropic.AsyncAnthropic, sim: SimServer,
                                                   stream: bool) -> None:
    # The simulated model calls a tool that the last user message names ("weather" for get_weather).
    asked: Any = [{"role": "user", "content": "What is the weather in Oslo?"}]
    if stream:
        async with claude.messages.stream(model="qwen3:4b", max_tokens=200, tools=[WEATHER], messages=asked) as s:
            kinds = [event.type async for event in s]
            reply = await s.get_final_message()
        assert "input_json" in kinds
    else:
        reply = await claude.messages.create(model="qwen3:4b", max_tokens=200, tools=[WEATHER], messages=asked)
    assert reply.stop_reason == "tool_use"
    use = next(block for block in reply.content if block.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Oslo"}
    sent = native_body(sim, "/api/chat")
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": WEATHER["description"], "parameters": WEATHER["input_schema"]}}]

    answered = await claude.messages.create(model="qwen3:4b", max_tokens=200, tools=[WEATHER], messages=[
        *asked, {"role": "assistant", "content": [use.model_dump(exclude_none=True)]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "12 C, rain"}]}])
    assert answered.stop_reason == "end_turn" and answered.content[0].type == "text"
    history = native_body(sim, "/api/chat")["messages"]
    called = history[1]["tool_calls"][0]["function"]
    assert history[1]["role"] == "assistant" and (called["name"], called["arguments"]) == ("get_weather",
                                                                                            {"city": "Oslo"})
    assert history[2]["role"] == "tool" and history[2]["content"] == "12 C, rain"
    assert reached_v1(sim) == []


async def test_count_tokens_is_answered_by_the_proxy(claude: anthropic.AsyncAnthropic, sim: SimServer) -> None:
    counted = await claude.messages.count_tokens(model="llama3.2", system="You are terse.", messages=HELLO,
                                                 tools=[WEATHER])
    bare = await claude.messages.count_tokens(model="llama3.2", messages=HELLO)
    assert counted.input_tokens > bare.input_tokens > 0
    # Nothing generated: the simulator saw at most the metadata look-ups (/api/show), no chat.
    assert sim.state.stats.requests["/api/chat"] == 0 and reached_v1(sim) == []


@pytest.mark.parametrize("stream", [pytest.param(False, id="whole"), pytest.param(True, id="streamed")])
async def test_unknown_model_is_not_found_in_anthropics_shape(claude: anthropic.AsyncAnthropic,
                                                              stream: bool) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        await claude.messages.create(model="no-such-model", max_tokens=10, messages=HELLO, stream=stream)
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert "no-such-model" in body["error"]["message"]


@pytest.mark.parametrize(("extra", "fragment"), [
    pytest.param({"extra_body": {"temperature": 3}}, "temperature", id="temperature-out-of-range"),
    pytest.param({"tool_choice": {"type": "tool", "name": "nope"}, "tools": [WEATHER]}, "tool_choice",
                 id="unknown-tool-choice"),
    pytest.param({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "server tool",
                 id="server-tool"),
    pytest.param({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}]}]}, "url image",
                 id="url-image"),
])
async def test_malformed_request_is_an_invalid_request_error(claude: anthropic.AsyncAnthropic, sim: SimServer,
                                                             extra: dict[str, Any], fragment: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        await claude.messages.create(**({"model": "llama3.2", "max_tokens": 10, "messages": HELLO} | extra))
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error" and fragment in body["error"]["message"]
    assert sim.state.stats.requests["/api/chat"] == 0


@pytest.mark.parametrize("payload", [pytest.param(b"{not json", id="invalid-json"),
                                     pytest.param(b'{"model": "llama3.2", "messages": []}', id="no-max_tokens")])
async def test_undecodable_request_is_a_400_in_anthropics_shape(proxy: str, payload: bytes) -> None:
    async with aiohttp.ClientSession() as session, session.post(
            f"{proxy}/v1/messages", data=payload, headers={"x-api-key": "x", "anthropic-version": "2023-06-01"}
    ) as response:
        assert response.status == 400
        body = await response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


async def test_backend_dying_mid_stream_makes_the_sdk_raise(claude: anthropic.AsyncAnthropic, sim: SimServer) -> None:
    sim.state.faults.set(Fault("drop_mid_stream", count=1, after_chunks=2, paths=("/api/chat",)))
    seen: list[str] = []
    with pytest.raises(anthropic.APIError) as info:
        async with claude.messages.stream(model="llama3.2", max_tokens=500, messages=HELLO) as stream:
            async for event in stream:
                seen.append(event.type)
    assert "text" in seen and "message_stop" not in seen
    assert "sim" in str(info.value)
    # and the proxy keeps serving
    again = await claude.messages.create(model="llama3.2", max_tokens=100, messages=HELLO)
    assert again.stop_reason == "end_turn"


async def test_openai_type_backend_is_spoken_to_in_chat_completions(sim: SimServer,
                                                                    proxy_factory: Callable[..., Any]) -> None:
    url = await proxy_factory({"backends": [{"id": "sim", "type": "openai", "endpoint": sim.url}]})
    async with anthropic.AsyncAnthropic(**sdk_options(url)) as sdk:
        whole = await sdk.messages.create(model="llama3.2", max_tokens=100, system="Be brief.", messages=HELLO)
        async with sdk.messages.stream(model="llama3.2", max_tokens=100, messages=HELLO) as stream:
            streamed = await stream.get_final_message()
        tool = await sdk.messages.create(model="qwen3:4b", max_tokens=100, tools=[WEATHER],
                                         messages=[{"role": "user", "content": "Weather in Oslo?"}])
    assert whole.type == "message" and whole.stop_reason == "end_turn" and whole.content[0].type == "text"
    assert whole.usage.input_tokens > 0 and whole.usage.output_tokens > 0
    assert streamed.content[0].type == "text" and streamed.content[0].text
    assert tool.stop_reason == "tool_use" and tool.content[-1].type == "tool_use"
    assert tool.content[-1].input == {"city": "Oslo"}
    # The backend got chat completions; neither its native chat nor its Anthropic layer saw a request.
    stats = sim.state.stats.requests
    assert stats["/v1/chat/completions"] == 3 and stats["/v1/messages"] == 0 and stats["/api/chat"] == 0
    first = sim.state.stats.last_body["/v1/chat/completions"]
    assert first["model"] == "qwen3:4b" and first["tools"][0]["function"]["name"] == "get_weather"


def tiny_vocabulary_model(name: str) -> ModelSpec:
    """A chat model whose /api/show carries a real (tiny, SentencePiece) vocabulary, and which counts its
    prompts with that same vocabulary: the proxy's exact counts can then be checked against Ollama's."""
    tokens, scores, types = vocabulary()
    info = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": scores,
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.bos_token_id": 1,
            "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0,
            "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": False}
    tokenizer = build_tokenizer(info)
    return ModelSpec.parse(name, tokenizer_info=info, tokenize=lambda text: len(tokenizer.encode(text)))


async def test_exact_count_picks_the_size_chars_over_4_would_get_wrong(
        sim_factory: Callable[..., Any], proxy_factory: Callable[..., Any]) -> None:
    sim = await sim_factory(models=[tiny_vocabulary_model("tiny-chat")])
    url = await proxy_factory({"backends": [{"id": "sim", "endpoint": sim.url}]})
    async with anthropic.AsyncAnthropic(**sdk_options(url)) as sdk:
        # The proxy builds the tokenizer from verbose /api/show in the background; it estimates until then.
        deadline, method = time.monotonic() + 30, ""
        while method != "exact":
            assert time.monotonic() < deadline, "the exact tokenizer was never ready"
            raw = await sdk.messages.with_raw_response.create(model="tiny-chat", max_tokens=50, messages=HELLO)
            method = raw.headers["X-Proxy-Context-Count-Method"]
            await asyncio.sleep(0.05)
        # Words this vocabulary has whole: one token each, though 7-8 characters with their space.
        words = ("context", "weather", "answer", "ollama") * 5000
        prompt: Any = [{"role": "user", "content": " ".join(words)}]
        estimate = (len(prompt[0]["content"]) + 3) // 4
        raw = await sdk.messages.with_raw_response.create(model="tiny-chat", max_tokens=1000, messages=prompt)
        counted = await sdk.messages.count_tokens(model="tiny-chat", messages=prompt)
    reply = await raw.parse()
    headers = raw.headers
    assert headers["X-Proxy-Context-Count-Method"] == "exact"
    evaluated = reply.usage.input_tokens
    assert abs(int(headers["X-Proxy-Context-Input-Tokens"]) - evaluated) <= 3
    # Required fits 32768 by the real count; chars/4 (37.5K tokens) would have asked for 65536.
    needed = int(headers["X-Proxy-Context-Required"])
    assert needed <= 32768 < estimate + needed - int(headers["X-Proxy-Context-Input-Tokens"])
    assert headers["X-Proxy-Context-Size"] == "32768"
    assert native_body(sim, "/api/chat")["options"]["num_ctx"] == 32768
    assert sim.state.stats.last_prompt["tiny-chat:latest"]["kept"] == evaluated  # nothing truncated
    # count_tokens is the same counter: what Ollama evaluated, within the chat template's few tokens.
    assert abs(counted.input_tokens - evaluated) <= 8
