"""Runtime fault modes, the busy queue, parallel slots and pacing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest

from ollama_proxy.sim import SimServer
from ollama_proxy.sim.faults import BUSY_MESSAGE
from tests.sim.conftest import MakeSim, call, stats

STREAM_CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "tell me a story"}]}
CHAT = STREAM_CHAT | {"stream": False}


async def set_fault(http: aiohttp.ClientSession, sim: SimServer, **fault: Any) -> None:
    status, body = await call(http, sim, "POST", "/sim/faults", fault)
    assert status == 200, body


async def stream_lines(http: aiohttp.ClientSession, sim: SimServer, body: Any = STREAM_CHAT) -> list[bytes]:
    async with http.post(sim.url + "/api/chat", json=body) as r:
        assert r.status == 200
        return [line async for line in r.content]


@pytest.mark.parametrize(("fault", "status", "error"), [
    pytest.param({"mode": "error", "status": 500, "message": "boom"}, 500, "boom", id="error"),
    pytest.param({"mode": "busy"}, 503, BUSY_MESSAGE, id="busy"),
])
async def test_fault_before_response(sim: SimServer, http: aiohttp.ClientSession, fault: dict[str, Any],
                                     status: int, error: str) -> None:
    await set_fault(http, sim, count=1, **fault)
    assert await call(http, sim, "POST", "/api/chat", CHAT) == (status, {"error": error})
    assert (await call(http, sim, "POST", "/api/chat", CHAT))[0] == 200  # count ran out
    assert (await stats(http, sim))["faults_triggered"] == 1


async def test_error_on_v1_is_openai_shaped(sim: SimServer, http: aiohttp.ClientSession) -> None:
    await set_fault(http, sim, mode="busy", paths=["/v1/"])
    assert (await call(http, sim, "GET", "/api/tags"))[0] == 200  # other paths untouched
    status, body = await call(http, sim, "POST", "/v1/chat/completions", CHAT)
    assert status == 503
    assert body["error"] == {"message": BUSY_MESSAGE, "type": "api_error", "param": None, "code": None}


async def test_error_mid_stream_sends_error_line_without_done(sim: SimServer,
                                                              http: aiohttp.ClientSession) -> None:
    await set_fault(http, sim, mode="error", after_chunks=2, message="runner died")
    lines = [orjson.loads(line) for line in await stream_lines(http, sim)]
    assert len(lines) == 3
    assert lines[-1] == {"error": "runner died"}
    assert not any(line.get("done") for line in lines)


async def test_drop_mid_stream_cuts_the_connection(sim: SimServer, http: aiohttp.ClientSession) -> None:
    await set_fault(http, sim, mode="drop_mid_stream", after_chunks=2)
    seen = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(sim.url + "/api/chat", json=STREAM_CHAT) as r:
            async for line in r.content:
                seen.append(orjson.loads(line))
    assert len(seen) == 2 and not seen[-1]["done"]


async def test_drop_on_non_stream_body(sim: SimServer, http: aiohttp.ClientSession) -> None:
    await set_fault(http, sim, mode="drop_mid_stream")
    with pytest.raises(aiohttp.ClientError):
        await call(http, sim, "POST", "/api/chat", CHAT)


async def test_malformed_line_then_stream_carries_on(sim: SimServer, http: aiohttp.ClientSession) -> None:
    await set_fault(http, sim, mode="malformed_line", after_chunks=1)
    lines = await stream_lines(http, sim)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(lines[1])
    assert orjson.loads(lines[-1])["done"] is True


async def test_hang_until_client_leaves(sim: SimServer, http: aiohttp.ClientSession) -> None:
    await set_fault(http, sim, mode="hang", count=1)
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(sim.url + "/api/chat", json=STREAM_CHAT,
                             timeout=aiohttp.ClientTimeout(total=0.3)) as r:
            await r.read()
    for _ in range(100):
        if (await stats(http, sim))["cancelled"] >= 1:
            break
        await asyncio.sleep(0.02)
    assert (await stats(http, sim))["cancelled"] == 1


async def test_slow_adds_delay(sim: SimServer, http: aiohttp.ClientSession) -> None:
    await set_fault(http, sim, mode="slow", delay_s=0.2)
    started = time.monotonic()
    assert (await call(http, sim, "GET", "/api/tags"))[0] == 200
    assert time.monotonic() - started >= 0.2


async def test_delete_faults_clears(sim: SimServer, http: aiohttp.ClientSession) -> None:
    await set_fault(http, sim, mode="error")
    assert (await call(http, sim, "GET", "/api/tags"))[0] == 500
    assert (await call(http, sim, "DELETE", "/sim/faults"))[0] == 200
    assert (await call(http, sim, "GET", "/api/tags"))[0] == 200


async def test_bad_fault_is_400(sim: SimServer, http: aiohttp.ClientSession) -> None:
    status, body = await call(http, sim, "POST", "/sim/faults", {"mode": "explode"})
    assert status == 400 and "unknown fault mode" in body["error"]


async def test_parallel_slots_bound_concurrency(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(num_parallel=2, time_scale=0.05)
    replies = await asyncio.gather(*(call(http, sim, "POST", "/api/chat", CHAT) for _ in range(4)))
    assert [status for status, _ in replies] == [200] * 4
    assert (await stats(http, sim))["peak_in_flight"] == {"llama3.2:latest": 2}


async def test_queue_full_while_loading_is_503(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(max_queue=1, time_scale=0.1)
    short = CHAT | {"options": {"num_predict": 1}}
    replies = await asyncio.gather(*(call(http, sim, "POST", "/api/chat", short) for _ in range(3)))
    assert sorted(status for status, _ in replies) == [200, 503, 503]
    assert {"error": BUSY_MESSAGE} in [body for _, body in replies]
    # once loaded, requests bypass the queue and wait for a slot instead
    replies = await asyncio.gather(*(call(http, sim, "POST", "/api/chat", short) for _ in range(3)))
    assert [status for status, _ in replies] == [200] * 3


async def test_time_scale_paces_load_and_tokens(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(profile="cpu", time_scale=0.05)  # load 75 ms, first token 20 ms, 6 ms a token
    started = time.monotonic()
    await call(http, sim, "POST", "/api/chat", CHAT | {"options": {"num_predict": 11}})
    assert time.monotonic() - started >= 0.075 + 0.020 + 10 * 0.05 / 8
    started = time.monotonic()
    await call(http, sim, "GET", "/api/tags")
    assert time.monotonic() - started < 0.05
