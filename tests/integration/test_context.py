"""The context engine end to end: the real proxy in front of the simulator, which reloads a model
whenever `num_ctx` changes and truncates silently, as Ollama does.

Requests go through the official `ollama` client; the proxy's explanation headers are read with an
httpx response hook on that client, and raw aiohttp is used where the exact bytes sent matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import itertools
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import ollama
import pytest

from ollama_proxy.config.schema import ContextConfig
from ollama_proxy.core.context import build_tokenizer
from ollama_proxy.core.ollama_api import canonical_model
from ollama_proxy.sim import ModelSpec, SimServer

SIZES = ContextConfig().sizes
_SIZE_HEADERS = ("X-Proxy-Context-Size", "X-Proxy-Context-Input-Tokens", "X-Proxy-Context-Required",
                 "X-Proxy-Context-Reason", "X-Proxy-Context-Count-Method")
_EXCEEDS = "Request may exceed largest available context!"
# Words the simulator counts as one token each (up to six letters) and a few it splits: text made of
# them is about 1.1 tokens per word, and chars/4 overestimates it by about a third.
_WORDS = ("the", "model", "reads", "a", "long", "prompt", "and", "keeps", "every", "token", "in", "its",
          "window", "while", "proxy", "sizes", "context", "carefully", "request", "reloads", "rarely", "so",
          "answers", "arrive", "quickly", "on", "small", "machines")
# One token each but seven characters with their space: chars/4 overestimates such text by 75 %.
_DENSE_WORDS = ("models", "prompt", "window", "tokens", "sizing", "answer", "memory", "server", "client",
                "reload")


def prose(words: int, seed: int, vocabulary: Sequence[str] = _WORDS) -> str:
    """Deterministic English-like text of `words` words, in sentences."""
    rng = random.Random(seed)
    sentences = []
    while words > 0:
        length = min(words, rng.randint(6, 14))
        words -= length
        sentences.append(" ".join(rng.choice(vocabulary) for _ in range(length)).capitalize() + ".")
    return " ".join(sentences)


async def sim_stats(sim: SimServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{sim.url}/sim/stats") as r:
        return dict(await r.json())


@dataclass(slots=True)
class Recorded:
    """An `ollama.AsyncClient` whose every HTTP response's headers are kept, newest last."""

    client: ollama.AsyncClient
    headers: list[httpx.Headers]

    @property
    def last(self) -> httpx.Headers:
        return self.headers[-1]


@pytest.fixture
async def recorded() -> AsyncIterator[Callable[[str], Recorded]]:
    async with contextlib.AsyncExitStack() as stack:
        def make(host: str) -> Recorded:
            seen: list[httpx.Headers] = []

            async def keep(response: httpx.Response) -> None:
                seen.append(response.headers)

            client = ollama.AsyncClient(host=host, event_hooks={"response": [keep]})
            stack.push_async_callback(client.close)
            return Recorded(client, seen)

        yield make


@pytest.fixture
def setup(sim_factory: Callable[..., Any], proxy_factory: Callable[..., Any]
          ) -> Callable[..., Any]:
    """`sim, url = await setup(models=[...], sizes=..., default_route=...)`: a simulator and a proxy for it."""

    async def make(models: Sequence[str | ModelSpec] = ("llama3.2", "qwen3:4b"), **context: Any
                   ) -> tuple[SimServer, str]:
        sim = await sim_factory(models=list(models))
        url = await proxy_factory({"backends": [{"id": "sim", "endpoint": sim.url}], "context": context})
        return sim, url

    return make


@dataclass(frozen=True, slots=True)
class Call:
    """One request of a workload: chat or generate, with a prompt of about `words` words."""

    kind: str
    model: str
    words: int
    stream: bool
    turns: int = 1
    vocabulary: Sequence[str] = _WORDS


async def send(client: ollama.AsyncClient, call: Call, seed: int, options: Mapping[str, Any] | None = None
               ) -> int:
    """Make the call; returns the prompt_eval_count of its final response."""
    text = prose(call.words, seed, call.vocabulary)
    if call.kind == "generate":
        answer = await client.generate(model=call.model, prompt=text, stream=call.stream, options=options)
    else:
        sentences = text.split(". ")
        step = -(-len(sentences) // call.turns)
        pieces = [". ".join(sentences[i:i + step]) for i in range(0, len(sentences), step)]
        messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": piece}
                    for i, piece in enumerate(pieces)]
        answer = await client.chat(model=call.model, messages=messages, stream=call.stream, options=options)
    if call.stream:
        answer = [part async for part in answer][-1]
    assert answer.done
    return int(answer.prompt_eval_count or 0)


# Small and large prompts interleaved over two models; the large ones arrive in growing steps so that
# some must grow the loaded context and the small ones after them must not shrink it.
WORKLOAD = (
    Call("generate", "llama3.2", 40, stream=False),
    Call("chat", "llama3.2", 2500, stream=True),
    Call("generate", "qwen3:4b", 60, stream=True),
    Call("chat", "llama3.2", 30, stream=False),
    Call("generate", "llama3.2", 9000, stream=False),
    Call("chat", "qwen3:4b", 5000, stream=False, turns=3),
    Call("generate", "llama3.2", 500, stream=True),
    Call("chat", "llama3.2", 4000, stream=True, turns=5),
    Call("generate", "qwen3:4b", 50, stream=False),
    Call("generate", "llama3.2", 20000, stream=True),
    Call("chat", "llama3.2", 10, stream=False),
)


async def test_mixed_workload_never_truncates_and_reloads_only_to_grow(setup: Any, recorded: Any) -> None:
    sim, url = await setup()
    client = recorded(f"{url}/proxy-context/auto")
    sizes: dict[str, list[tuple[int, str]]] = {}
    for seed, call in enumerate(WORKLOAD):
        await send(client.client, call, seed)
        headers = client.last
        assert all(name in headers for name in _SIZE_HEADERS), (call, headers)
        assert "X-Proxy-Context-Truncated" not in headers, (call, headers)
        assert "X-Proxy-Context-Warning" not in headers, (call, headers)
        size = int(headers["X-Proxy-Context-Size"])
        assert int(headers["X-Proxy-Context-Required"]) <= size
        sizes.setdefault(call.model, []).append((size, headers["X-Proxy-Context-Reason"]))

    stats = await sim_stats(sim)
    assert stats["truncations"] == 0
    growth_steps = 0
    for model, chosen in sizes.items():
        assert chosen[0][1] == "fits-bucket"
        steps = 0
        for (before, _), (after, reason) in itertools.pairwise(chosen):
            assert after >= before, f"{model} shrank: {chosen}"
            assert reason == ("grown" if after > before else "reused-loaded"), chosen
            steps += after > before
        name = canonical_model(model)
        assert stats["reloads_by_model"].get(name, 0) == steps
        assert stats["loaded"][name]["context_length"] == chosen[-1][0]
        growth_steps += steps
    assert growth_steps >= 3  # the workload really exercises growth
    assert stats["reloads"] == growth_steps


async def test_same_workload_through_a_passthrough_proxy_truncates(setup: Any, recorded: Any) -> None:
    """The control: a client that fixes a small num_ctx itself gets truncated prompts, silently."""
    sim, url = await setup()
    client = recorded(url)
    for seed, call in enumerate(WORKLOAD):
        await send(client.client, call, seed, options={"num_ctx": 2048})
        assert "X-Proxy-Context-Size" not in client.last
    stats = await sim_stats(sim)
    assert stats["truncations"] >= 5
    assert {o["num_ctx"] for o in stats["last_options_by_model"].values()} == {2048}


@pytest.mark.parametrize(("path", "size"), [
    pytest.param("/api/chat", 8192, id="chat-8192"),
    pytest.param("/api/generate", 2048, id="generate-2048"),
    pytest.param("/api/chat", 32768, id="chat-32768"),
])
async def test_fixed_route_sets_that_size_and_changes_nothing_else(setup: Any, path: str, size: int) -> None:
    sim, url = await setup()
    options = {"temperature": 0.25, "num_predict": 4, "seed": 7, "num_ctx": 1000, "stop": ["\n\n"]}
    body: dict[str, Any] = {"model": "llama3.2", "stream": False, "keep_alive": "7m", "options": options}
    if path == "/api/chat":
        body["messages"] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    else:
        body |= {"prompt": "Hello", "system": "Be brief."}
    async with aiohttp.ClientSession() as session, session.post(f"{url}/proxy-context/{size}{path}",
                                                                json=body) as r:
        assert r.status == 200, await r.text()
        assert r.headers["X-Proxy-Context-Size"] == str(size)
        assert r.headers["X-Proxy-Context-Reason"] == "fixed-route"
    stats = await sim_stats(sim)
    assert stats["last_body"][path] == body | {"options": options | {"num_ctx": size}}
    assert stats["loaded"]["llama3.2:latest"]["context_length"] == size


@pytest.mark.parametrize("segment", [
    pytest.param("1000", id="not-configured"),
    pytest.param("abc", id="not-a-number"),
    pytest.param("-2048", id="negative"),
    pytest.param("2048.0", id="float"),
    pytest.param("", id="empty"),
    pytest.param("08192", id="leading-zero"),
    pytest.param("8_192", id="underscore"),
])
async def test_bad_sizes_get_400_listing_the_valid_ones(setup: Any, segment: str) -> None:
    sim, url = await setup()
    body = {"model": "llama3.2", "stream": False, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as session, session.post(f"{url}/proxy-context/{segment}/api/chat",
                                                                json=body) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert "auto" in error and ", ".join(map(str, SIZES)) in error
    assert (await sim_stats(sim))["requests"].get("/api/chat", 0) == 0


@pytest.mark.parametrize(("default_route", "sized"), [
    pytest.param("passthrough", False, id="passthrough"),
    pytest.param("auto", True, id="auto"),
])
async def test_bare_paths_follow_the_default_route(setup: Any, default_route: str, sized: bool) -> None:
    sim, url = await setup(default_route=default_route)
    body = {"model": "llama3.2", "prompt": "Hello", "stream": False, "options": {"num_predict": 3}}
    async with aiohttp.ClientSession() as session, session.post(f"{url}/api/generate", json=body) as r:
        assert r.status == 200
        assert ("X-Proxy-Context-Size" in r.headers) is sized
    sent = (await sim_stats(sim))["last_body"]["/api/generate"]
    assert ("num_ctx" in sent["options"]) is sized
    if not sized:
        assert sent == body


async def test_clamped_to_the_models_trained_maximum(setup: Any, recorded: Any) -> None:
    sim, url = await setup(models=["tiny:1b=4096"])
    client = recorded(f"{url}/proxy-context/auto")
    answers = []
    for seed, words in enumerate([50, 5000, 6000]):
        await send(client.client, Call("generate", "tiny:1b", words, stream=False), seed)
        answers.append(client.last)
    assert [(h["X-Proxy-Context-Size"], h["X-Proxy-Context-Reason"]) for h in answers] == [
        ("2048", "fits-bucket"), ("4096", "clamped-to-model-max"), ("4096", "reused-loaded")]
    assert answers[1]["X-Proxy-Context-Warning"] == _EXCEEDS
    stats = await sim_stats(sim)
    assert stats["loaded"]["tiny:1b"]["context_length"] == 4096
    assert stats["last_options"]["num_ctx"] == 4096
    assert stats["reloads"] == 1


async def test_prompt_larger_than_the_largest_size_warns(setup: Any, recorded: Any,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    sim, url = await setup(sizes=[2048, 4096])
    client = recorded(f"{url}/proxy-context/auto")
    with caplog.at_level(logging.WARNING, logger="ollama_proxy.context"):
        await send(client.client, Call("chat", "llama3.2", 6000, stream=True), seed=1)
    headers = client.last
    assert (headers["X-Proxy-Context-Size"], headers["X-Proxy-Context-Reason"]) == ("4096", "exceeds-largest")
    assert headers["X-Proxy-Context-Warning"] == _EXCEEDS
    assert int(headers["X-Proxy-Context-Required"]) > 4096
    warnings = [r.getMessage() for r in caplog.records if _EXCEEDS in r.getMessage()]
    assert len(warnings) == 1 and "llama3.2" in warnings[0]
    assert (await sim_stats(sim))["last_options"]["num_ctx"] == 4096


async def test_truncation_is_detected_flagged_and_counted(setup: Any, recorded: Any,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    sim, url = await setup()
    fixed = recorded(f"{url}/proxy-context/2048")
    auto = recorded(f"{url}/proxy-context/auto")
    with caplog.at_level(logging.WARNING, logger="ollama_proxy.context"):
        # chars/4 overcounts this text: Ollama evaluates far fewer tokens than counted, without truncation.
        evaluated = await send(auto.client, Call("generate", "qwen3:4b", 80, stream=False,
                                                 vocabulary=_DENSE_WORDS), seed=2)
        assert evaluated < 0.9 * int(auto.last["X-Proxy-Context-Input-Tokens"])
        assert "X-Proxy-Context-Truncated" not in auto.last
        # The sized route forces 2048 on a prompt of about 5000 tokens: the simulator cuts it silently.
        evaluated = await send(fixed.client, Call("generate", "llama3.2", 4000, stream=False), seed=3)
        flagged = fixed.last["X-Proxy-Context-Truncated"]
        assert f"prompt_eval_count={evaluated}" in flagged
        assert f"counted={fixed.last['X-Proxy-Context-Input-Tokens']}" in flagged
        # Streamed: the headers are gone before the answer says anything, but the log and count see it.
        await send(fixed.client, Call("chat", "llama3.2", 4000, stream=True, turns=2), seed=4)
    stats = await sim_stats(sim)
    assert stats["truncations"] == 2
    logged = [r for r in caplog.records if "fewer prompt tokens" in r.getMessage()]
    assert len(logged) == 2 and all("num_ctx=2048" in r.getMessage() for r in logged)
    async with aiohttp.ClientSession() as session, session.get(f"{url}/health") as response:
        assert (await response.json())["context"]["truncations_detected"] == 2


async def test_calibration_converges_to_the_backends_tokenizer(setup: Any, recorded: Any) -> None:
    _, url = await setup()
    client = recorded(f"{url}/proxy-context/auto")
    errors, methods = [], []
    for seed, words in enumerate([300, 1200, 150, 2500, 800, 1800]):
        call = Call("generate", "llama3.2", words, stream=seed % 2 == 1, vocabulary=_DENSE_WORDS)
        evaluated = await send(client.client, call, seed)
        errors.append(abs(int(client.last["X-Proxy-Context-Input-Tokens"]) - evaluated) / evaluated)
        methods.append(client.last["X-Proxy-Context-Count-Method"])
    assert methods == ["chars/4"] + ["calibrated"] * 5
    assert errors[0] > 0.3  # chars/4 is far off for this text ...
    assert max(errors[2:]) < 0.03  # ... the learned ratio is not


_VOCAB_DIR_ENV = "OLLAMA_PROXY_VOCAB_DIR"


@functools.cache
def _model_info(path: Path) -> dict[str, Any]:
    """A GGUF vocabulary's metadata as verbose /api/show gives it.

    Read with the unit tests' reader: `sim.model_info_from_gguf` (gguf.GGUFReader) needs over ten
    seconds for a 50k-token vocabulary, this one a fraction of a second.
    """
    reader_path = Path(__file__).parents[1] / "unit" / "context" / "gguf_vocab.py"
    spec = importlib.util.spec_from_file_location("gguf_vocab", reader_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.read_model_info(path))


async def test_exact_count_with_the_models_own_tokenizer(setup: Any, recorded: Any) -> None:
    vocab = Path(os.environ.get(_VOCAB_DIR_ENV, "/nonexistent")) / "ggml-vocab-gpt-2.gguf"
    if not vocab.is_file():
        pytest.skip(f"set {_VOCAB_DIR_ENV} to llama.cpp's models/ directory for the real-vocabulary test")
    # Only the tokenizer: the vocabulary file's own `gpt2.context_length` (1024) would clamp every size.
    info = {k: v for k, v in _model_info(vocab).items() if k.startswith("tokenizer.")}
    tokenizer = build_tokenizer(info)
    spec = ModelSpec.parse("gpt2-chat", tokenizer_info=info, tokenize=lambda text: len(tokenizer.encode(text)))
    sim, url = await setup(models=[spec])
    client = recorded(f"{url}/proxy-context/auto")
    # The proxy builds the tokenizer in the background from verbose /api/show; estimates until then.
    deadline = time.monotonic() + 30
    seed = 0
    while client.headers[-1:] == [] or client.last["X-Proxy-Context-Count-Method"] != "exact":
        assert time.monotonic() < deadline, "the exact tokenizer was never ready"
        await asyncio.sleep(0.05 if seed else 0)
        await send(client.client, Call("generate", "gpt2-chat", 40, stream=False), seed)
        seed += 1
    # That first exact answer taught the template's cost; from here on the counts are Ollama's.
    for call in [Call("generate", "gpt2-chat", 3000, stream=False),
                 Call("chat", "gpt2-chat", 2000, stream=True, turns=4),
                 Call("generate", "gpt2-chat", 200, stream=True),
                 Call("chat", "gpt2-chat", 6000, stream=False, turns=3)]:
        seed += 1
        evaluated = await send(client.client, call, seed)
        assert client.last["X-Proxy-Context-Count-Method"] == "exact"
        counted = int(client.last["X-Proxy-Context-Input-Tokens"])
        assert abs(counted - evaluated) <= max(3, evaluated // 100), (call, counted, evaluated)
    assert (await sim_stats(sim))["truncations"] == 0


async def test_health_lists_the_sizes(setup: Any) -> None:
    _, url = await setup(sizes=[65536, 1024, 3000], default_route="auto")
    async with aiohttp.ClientSession() as session, session.get(f"{url}/health") as r:
        assert r.status == 200
        health = await r.json()
    assert health["context"]["sizes"] == [1024, 3000, 65536]
    assert health["context"]["default_route"] == "auto"
    assert health["context"]["truncations_detected"] == 0
