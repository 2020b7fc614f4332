"""A real llama.cpp server as an OpenAI-type backend behind the proxy, driven by the official clients.

The `openai` SDK talks `/v1` straight through; the `ollama` client's native calls are translated
to the server's `/v1` API and back. Random weights: assert on shapes, counts, finish reasons and
determinism at temperature 0, never on meaning. Every request asks for a few tokens only, so the
file stays fast on two cores.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import ollama
import openai
import pytest

from ollama_proxy.sim import SimServer

pytestmark = pytest.mark.realbackend

MODEL = "tiny"  # the alias tests/realbackend/conftest.py serves the model under
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}]
GREEDY_SDK: dict[str, Any] = {"temperature": 0, "seed": 1, "max_tokens": 8}
GREEDY_NATIVE: dict[str, Any] = {"temperature": 0, "seed": 1, "num_predict": 8}
LONG_PROMPT = "hello world " * 1500  # about 3000 tokens, over the server's n_ctx of 2048
EMPTY_STREAM_HINT = "n_ctx"  # the proxy's error names the cause of llama.cpp's empty stream


@pytest.fixture
async def proxy(proxy_factory: Any, llama_server: str) -> str:
    return str(await proxy_factory({"backends": [{"id": "llama", "type": "openai", "endpoint": llama_server}]}))


@pytest.fixture
async def sdk(proxy: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=proxy + "/v1", api_key="x", max_retries=0, timeout=60.0) as client:
        yield client


@pytest.fixture
def client(ollama_client: Any, proxy: str) -> ollama.AsyncClient:
    return ollama_client(proxy)  # type: ignore[no-any-return]


async def test_sdk_chat_streamed_and_not(sdk: openai.AsyncOpenAI) -> None:
    whole = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, **GREEDY_SDK)
    choice = whole.choices[0]
    assert whole.object == "chat.completion" and whole.model == MODEL
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert whole.usage is not None and whole.usage.prompt_tokens > 0 and whole.usage.completion_tokens > 0

    chunks = [chunk async for chunk in await sdk.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, **GREEDY_SDK)]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == choice.message.content
    assert [chunk.choices[0].finish_reason for chunk in chunks][-1] == choice.finish_reason


async def test_sdk_completions_streamed_and_not(sdk: openai.AsyncOpenAI) -> None:
    whole = await sdk.completions.create(model=MODEL, prompt="the proxy", **GREEDY_SDK)
    assert whole.object == "text_completion" and whole.choices[0].text
    assert whole.choices[0].finish_reason in ("stop", "length")
    chunks = [chunk async for chunk in await sdk.completions.create(
        model=MODEL, prompt="the proxy", stream=True, **GREEDY_SDK)]
    assert "".join(chunk.choices[0].text for chunk in chunks) == whole.choices[0].text


async def test_sdk_embeddings(sdk: openai.AsyncOpenAI) -> None:
    floats = await sdk.embeddings.create(model=MODEL, input=["hello", "world model"], encoding_format="float")
    assert [item.index for item in floats.data] == [0, 1]
    assert all(len(item.embedding) == 64 for item in floats.data)
    assert floats.data[0].embedding != floats.data[1].embedding
    # Left unset, the SDK asks for base64 and decodes what comes back.
    default = await sdk.embeddings.create(model=MODEL, input=["hello", "world model"])
    for got, want in zip(default.data, floats.data, strict=True):
        assert got.embedding == pytest.approx(want.embedding, abs=1e-5)


async def test_sdk_models(sdk: openai.AsyncOpenAI) -> None:
    assert [model.id async for model in sdk.models.list()] == [MODEL]
    assert (await sdk.models.retrieve(MODEL)).id == MODEL
    with pytest.raises(openai.NotFoundError):
        await sdk.models.retrieve("no-such-model")


async def test_sdk_over_long_streamed_prompt_raises(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.APIError):
        async for _ in await sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": LONG_PROMPT}], stream=True):
            pass


async def test_ollama_chat_streamed_and_not(client: ollama.AsyncClient) -> None:
    whole = await client.chat(model=MODEL, messages=MESSAGES, options=GREEDY_NATIVE)
    assert whole.done and whole.model == MODEL and whole.done_reason in ("stop", "length")
    assert whole.message.role == "assistant" and whole.prompt_eval_count and whole.eval_count
    parts = [part async for part in await client.chat(model=MODEL, messages=MESSAGES, options=GREEDY_NATIVE,
                                                      stream=True)]
    assert [part.done for part in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(part.message.content or "" for part in parts) == whole.message.content
    assert parts[-1].done_reason == whole.done_reason


async def test_ollama_generate_streamed_and_not(client: ollama.AsyncClient) -> None:
    whole = await client.generate(model=MODEL, prompt="hello world", system="Be brief.", options=GREEDY_NATIVE)
    assert whole.done and whole.response and whole.done_reason in ("stop", "length")
    parts = [part async for part in await client.generate(model=MODEL, prompt="hello world", system="Be brief.",
                                                          options=GREEDY_NATIVE, stream=True)]
    assert parts[-1].done and not any(part.done for part in parts[:-1])
    assert "".join(part.response for part in parts) == whole.response
    raw = await client.generate(model=MODEL, prompt="the proxy", raw=True, options=GREEDY_NATIVE)
    assert raw.done and raw.response


async def test_ollama_embed(client: ollama.AsyncClient) -> None:
    result = await client.embed(model=MODEL, input=["hello", "world model"])
    assert len(result.embeddings) == 2 and all(len(vector) == 64 for vector in result.embeddings)
    assert all(math.isclose(math.hypot(*vector), 1.0, rel_tol=1e-6) for vector in result.embeddings)


async def test_ollama_list_with_a_lone_openai_backend(client: ollama.AsyncClient) -> None:
    assert [model.model for model in (await client.list()).models] == [MODEL]


async def test_ollama_list_next_to_an_ollama_backend(ollama_client: Any, proxy_factory: Any, llama_server: str,
                                                     sim: SimServer) -> None:
    url = await proxy_factory({"backends": [{"id": "llama", "type": "openai", "endpoint": llama_server},
                                            {"id": "sim", "endpoint": sim.url}]})
    listed = (await ollama_client(url).list()).models
    assert MODEL in {model.model for model in listed}
    assert "llama3.2:latest" in {model.model for model in listed}


async def test_ollama_over_long_streamed_prompt_is_an_error(client: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        async for _ in await client.chat(model=MODEL, messages=[{"role": "user", "content": LONG_PROMPT}],
                                         stream=True):
            pass
    assert EMPTY_STREAM_HINT in str(info.value)
    # llama.cpp resets the connection behind that stream: the next request must not inherit it.
    reply = await client.chat(model=MODEL, messages=MESSAGES, options=GREEDY_NATIVE)
    assert reply.done


async def test_ollama_over_long_prompt_is_a_400(client: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        await client.chat(model=MODEL, messages=[{"role": "user", "content": LONG_PROMPT}])
    assert info.value.status_code == 400 and "context" in str(info.value).lower()


async def test_request_ids_llama_cpp_would_refuse_are_not_passed_on(proxy: str) -> None:
    # llama-cpp-python's server answers a non-UUID X-Request-ID with an empty 400.
    async with aiohttp.ClientSession() as session, session.post(
            f"{proxy}/v1/chat/completions", headers={"X-Request-ID": "my-own-id"},
            json={"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.status == 200, await r.text()
        assert r.headers["X-Request-ID"] == "my-own-id"
