"""Context window behaviour end to end: reloads on num_ctx changes (v0.30+ rules) and silent truncation."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from ollama_proxy.sim import SimServer
from tests.sim.conftest import MakeSim, call, stats

LONG = "word " * 6000  # about 6000 tokens


async def chat(http: aiohttp.ClientSession, sim: SimServer, model: str = "llama3.2", content: str = "hi",
               **extra: Any) -> tuple[int, Any]:
    body = {"model": model, "stream": False, "messages": [{"role": "user", "content": content}]} | extra
    return await call(http, sim, "POST", "/api/chat", body)


def ctx(num_ctx: int | None) -> dict[str, Any]:
    return {} if num_ctx is None else {"options": {"num_ctx": num_ctx}}


@pytest.mark.parametrize(("sequence", "reloads", "final_ctx"), [
    pytest.param([None, None, None], 0, 4096, id="automatic-never-reloads"),
    pytest.param([None, 8192], 1, 8192, id="explicit-after-automatic"),
    pytest.param([None, 8192, None], 2, 4096, id="unset-after-explicit-reloads-again"),
    pytest.param([8192, 8192], 0, 8192, id="same-explicit"),
    pytest.param([8192, 16384], 1, 16384, id="growth"),
    pytest.param([None, 4096], 0, 4096, id="explicit-equal-to-automatic"),
    pytest.param([200000, 262144], 0, 131072, id="capped-at-trained-max"),
])
async def test_reload_rules(sim: SimServer, http: aiohttp.ClientSession, sequence: list[int | None],
                            reloads: int, final_ctx: int) -> None:
    for num_ctx in sequence:
        assert (await chat(http, sim, **ctx(num_ctx)))[0] == 200
    seen = await stats(http, sim)
    assert seen["reloads"] == reloads
    assert seen["loads"] == reloads + 1
    assert seen["loaded"]["llama3.2:latest"]["context_length"] == final_ctx
    _, ps = await call(http, sim, "GET", "/api/ps")
    assert [m["context_length"] for m in ps["models"]] == [final_ctx]


async def test_reload_shows_in_load_duration(sim: SimServer, http: aiohttp.ClientSession) -> None:
    _, first = await chat(http, sim)
    _, warm = await chat(http, sim)
    _, reloaded = await chat(http, sim, **ctx(8192))
    assert first["load_duration"] == reloaded["load_duration"] > 100 * warm["load_duration"]


async def test_shift_false_is_a_reload_trigger(sim: SimServer, http: aiohttp.ClientSession) -> None:
    await chat(http, sim)
    await chat(http, sim, shift=False)
    await chat(http, sim)
    assert (await stats(http, sim))["reloads"] == 2


async def test_derived_model_shares_the_runner(sim: SimServer, http: aiohttp.ClientSession) -> None:
    create = {"model": "big", "from": "llama3.2", "parameters": {"num_ctx": 32768}, "stream": False}
    assert (await call(http, sim, "POST", "/api/create", create))[0] == 200
    for model in ("llama3.2", "big", "llama3.2"):
        await chat(http, sim, model=model)
    seen = await stats(http, sim)
    assert seen["reloads"] == 2
    assert seen["loaded"] == {"llama3.2:latest": seen["loaded"]["llama3.2:latest"]}


async def test_embedding_context_capped_at_trained(sim: SimServer, http: aiohttp.ClientSession) -> None:
    body = {"model": "nomic-embed-text", "input": "x", "options": {"num_ctx": 8192}}
    await call(http, sim, "POST", "/api/embed", body)
    assert (await stats(http, sim))["loaded"]["nomic-embed-text:latest"]["context_length"] == 2048


async def test_silent_truncation_keeps_half_the_window(sim: SimServer, http: aiohttp.ClientSession) -> None:
    status, reply = await chat(http, sim, content=LONG)
    assert status == 200 and "error" not in reply
    assert reply["prompt_eval_count"] == 4096 - (4096 - 5) // 2
    seen = await stats(http, sim)
    assert seen["truncations"] == 1
    assert seen["last_prompt"]["llama3.2:latest"]["tokens"] > 6000


async def test_generate_truncates_too_and_fits_with_bigger_ctx(sim: SimServer,
                                                               http: aiohttp.ClientSession) -> None:
    body = {"model": "llama3.2", "prompt": LONG, "stream": False}
    _, small = await call(http, sim, "POST", "/api/generate", body)
    _, big = await call(http, sim, "POST", "/api/generate", body | ctx(8192))
    assert small["prompt_eval_count"] < 4096 < big["prompt_eval_count"]
    assert (await stats(http, sim))["truncations"] == 1


async def test_old_messages_are_dropped_first(sim: SimServer, http: aiohttp.ClientSession) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": LONG},
                {"role": "assistant", "content": "ok"}, {"role": "user", "content": "and now?"}]
    _, reply = await call(http, sim, "POST", "/api/chat", {"model": "llama3.2", "stream": False,
                                                           "messages": messages})
    assert reply["prompt_eval_count"] < 100  # the long turn went, system and last message stayed
    assert (await stats(http, sim))["truncations"] == 1


@pytest.mark.parametrize(("extra", "fragment"), [
    pytest.param({"truncate": False}, "exceeds the available context size", id="truncate-false"),
    pytest.param({"shift": False}, "the prompt is longer than the context length", id="shift-false"),
])
async def test_no_truncation_means_400(sim: SimServer, http: aiohttp.ClientSession, extra: dict[str, Any],
                                       fragment: str) -> None:
    status, body = await chat(http, sim, content=LONG, **extra)
    assert status == 400 and fragment in body["error"]


async def test_modelfile_trained_context_from_spec(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(models=["tiny=1024"])
    await chat(http, sim, model="tiny", **ctx(8192))
    assert (await stats(http, sim))["loaded"]["tiny:latest"]["context_length"] == 1024
