"""Priority admission end to end (issue 6): the real proxy in front of one slow simulator.

A slot is held deterministically by the simulator's `hang` fault (the request hangs until its
client goes away), so "what is queued" never depends on timing; a generation-speed delay
(`time_scale` > 0) makes the rest take long enough for order to show. Assertions are on order,
status and counts, never on durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from ollama_proxy.sim import SimServer

TIMEOUT = aiohttp.ClientTimeout(total=60)
PROMPT = [{"role": "user", "content": "hello"}]


@dataclass
class Gate:
    """One backend `gpu` behind the proxy, with helpers to watch its queue."""

    url: str
    sim: SimServer

    async def chat(self, priority: str | None = None, *, path: str = "/api/chat", label: str = "",
                   done: list[str] | None = None) -> tuple[int, Mapping[str, str], Any]:
        headers = {"X-Priority": priority} if priority is not None else {}
        if path == "/api/chat":
            body: dict[str, Any] = {"model": "llama3.2", "stream": False, "messages": PROMPT,
                                    "options": {"num_predict": 8}}
        else:
            body = {"model": "llama3.2", "messages": PROMPT, "max_tokens": 8}
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, \
                s.post(self.url + path, json=body, headers=headers) as r:
            result = r.status, r.headers.copy(), await r.json()
        if done is not None:
            done.append(label)
        return result

    async def queue(self) -> dict[str, int]:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(self.url + "/backends") as r:
            backend = (await r.json())["backends"][0]
        levels = {level.replace("-", "_"): n for level, n in backend["queue"].items()}
        return {**levels, "queued": sum(levels.values()), "in_flight": backend["in_flight"]}

    async def wait_queue(self, what: str, **expected: int) -> None:
        """Poll /backends until the queue shows `expected` (e.g. normal=2, queued=2, in_flight=1)."""
        for _ in range(600):
            current = await self.queue()
            if all(current[k] == v for k, v in expected.items()):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"queue never reached {expected} ({what}); last seen {current}")

    async def sim_chats(self) -> int:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(self.sim.url + "/sim/stats") as r:
            stats = await r.json()
        return int(stats["requests"].get("/api/chat", 0))

    async def hang_next(self, count: int = 1) -> None:
        """The next `count` chats reach the simulator and hang there, each holding its slot."""
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.post(
                self.sim.url + "/sim/faults", json={"mode": "hang", "count": count, "paths": ["/api/chat"]}) as r:
            assert r.status == 200

    async def hold_slots(self, count: int = 1) -> list[asyncio.Task[Any]]:
        """Occupy `count` slots with hanging requests; cancel the tasks to free them."""
        await self.hang_next(count)
        holders = [asyncio.ensure_future(self.chat()) for _ in range(count)]
        await self.wait_queue("slots held", in_flight=count)
        return holders


async def release(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def gate_factory(sim_factory: Callable[..., Any], proxy_factory: Callable[..., Any]) -> Callable[..., Any]:
    """`await gate_factory(max_concurrent=1, time_scale=0.1, num_parallel=1, **router.queue)`."""
    async def make(*, max_concurrent: int = 1, time_scale: float = 0.1, num_parallel: int = 1,
                   **queue: Any) -> Gate:
        sim = await sim_factory(profile="cpu", models=["llama3.2"], time_scale=time_scale,
                                num_parallel=num_parallel)
        url = await proxy_factory({
            "backends": [{"id": "gpu", "endpoint": sim.url, "characteristics": {"max_concurrent": max_concurrent}}],
            "router": {"queue": queue},
            "system": {"nvidia_smi": "/nonexistent/nvidia-smi"},
        })
        return Gate(url, sim)

    return make


@pytest.mark.parametrize("reserve_critical", [
    pytest.param(True, id="reserved-slot"),
    pytest.param(False, id="head-of-queue"),
])
async def test_critical_sent_after_a_burst_of_best_effort_finishes_before_them(
        gate_factory: Callable[..., Any], reserve_critical: bool) -> None:
    gate = await gate_factory(reserve_critical=reserve_critical)
    done: list[str] = []
    burst = [asyncio.ensure_future(gate.chat("best-effort", label=f"b{i}", done=done)) for i in range(6)]
    await gate.wait_queue("burst queued", best_effort=5, in_flight=1)
    critical = await gate.chat("critical", label="critical", done=done)
    results = await asyncio.gather(*burst)
    assert critical[0] == 200 and all(status == 200 for status, _, _ in results)
    # At most the one best-effort request already running finished first.
    assert done.index("critical") <= 1
    assert await gate.sim_chats() == 7


async def test_priority_levels_by_name_and_number_are_served_highest_first(gate_factory: Callable[..., Any]) -> None:
    gate = await gate_factory(reserve_critical=False)
    holders = await gate.hold_slots()
    done: list[str] = []
    waiting = []
    for priority, label in (("0", "best-effort"), ("normal", "normal"), ("2", "high"),
                            ("best-effort", "best-effort-2"), ("HIGH", "high-2")):
        waiting.append(asyncio.ensure_future(gate.chat(priority, label=label, done=done)))
        # One at a time, so arrival order (FIFO within a level) is known.
        await gate.wait_queue(f"{label} queued", queued=len(waiting))
    await gate.wait_queue("all queued", best_effort=2, normal=1, high=2)
    await release(holders)
    assert [r[0] for r in await asyncio.gather(*waiting)] == [200] * 5
    assert done == ["high", "high-2", "normal", "best-effort", "best-effort-2"]


async def test_unknown_priority_is_400_naming_the_levels(gate_factory: Callable[..., Any]) -> None:
    gate = await gate_factory()
    status, _, body = await gate.chat("urgent")
    assert status == 400
    assert "best-effort (0)" in body["error"] and "critical (3)" in body["error"]
    assert await gate.sim_chats() == 0


@pytest.mark.parametrize(("path", "error_of"), [
    pytest.param("/api/chat", lambda body: body["error"], id="ollama-shape"),
    pytest.param("/v1/chat/completions", lambda body: body["error"]["message"], id="openai-shape"),
])
async def test_full_queue_is_429_with_retry_after(gate_factory: Callable[..., Any], path: str,
                                                  error_of: Callable[[Any], str]) -> None:
    gate = await gate_factory(max_length=2, reserve_critical=False)
    holders = await gate.hold_slots()
    queued = [asyncio.ensure_future(gate.chat()) for _ in range(2)]
    await gate.wait_queue("queue full", normal=2)
    status, headers, body = await gate.chat(path=path)
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    assert "queue full" in error_of(body)
    if path.startswith("/v1/"):
        assert body["error"]["type"] == "rate_limit_error"
    await release(holders)
    assert [r[0] for r in await asyncio.gather(*queued)] == [200, 200]
    # The refused request never reached the backend.
    assert await gate.sim_chats() == 3


@pytest.mark.parametrize(("path", "error_of"), [
    pytest.param("/api/chat", lambda body: body["error"], id="ollama-shape"),
    pytest.param("/v1/chat/completions", lambda body: body["error"]["message"], id="openai-shape"),
])
async def test_waiting_too_long_is_503_with_retry_after(gate_factory: Callable[..., Any], path: str,
                                                        error_of: Callable[[Any], str]) -> None:
    gate = await gate_factory(max_wait_ms=300)
    holders = await gate.hold_slots()
    status, headers, body = await gate.chat(path=path)
    assert status == 503
    assert int(headers["Retry-After"]) >= 1
    assert "waited 300 ms" in error_of(body)
    assert (await gate.queue())["queued"] == 0
    await release(holders)
    assert await gate.sim_chats() == 1


async def test_client_leaving_while_queued_leaves_the_queue_and_sends_nothing(
        gate_factory: Callable[..., Any]) -> None:
    gate = await gate_factory()
    holders = await gate.hold_slots()
    leaver = asyncio.ensure_future(gate.chat("high"))
    await gate.wait_queue("leaver queued", high=1)
    await release([leaver])
    await gate.wait_queue("leaver gone", high=0, in_flight=1)
    await release(holders)
    await gate.wait_queue("slot freed", in_flight=0)
    status, _, _ = await gate.chat()
    assert status == 200
    # The hung holder and the last request; nothing for the one that left.
    assert await gate.sim_chats() == 2


async def test_best_effort_is_not_starved_by_a_steady_stream_of_high(gate_factory: Callable[..., Any]) -> None:
    gate = await gate_factory(ageing_ms=100, time_scale=0.05)
    finished = asyncio.Event()
    high_served = 0
    cap = 40

    async def high_worker() -> None:
        nonlocal high_served
        # Two of these keep a high request waiting at every release: without ageing the
        # best-effort one would wait for all `cap` of them.
        while not finished.is_set() and high_served < cap:
            status, _, _ = await gate.chat("high")
            assert status == 200
            high_served += 1

    workers = [asyncio.ensure_future(high_worker()) for _ in range(2)]
    await gate.wait_queue("high stream running", high=1)
    status, _, _ = await gate.chat("best-effort")
    finished.set()
    await asyncio.gather(*workers)
    assert status == 200
    assert high_served < cap


async def test_a_burst_is_bounded_and_nothing_is_lost_or_sent_twice(gate_factory: Callable[..., Any]) -> None:
    gate = await gate_factory(max_concurrent=2, num_parallel=4, time_scale=0.02, max_length=8)
    priorities = ["best-effort", "normal", "high"] * 10
    burst = [asyncio.ensure_future(gate.chat(p)) for p in priorities]
    deepest = 0
    while not all(t.done() for t in burst):
        seen = await gate.queue()
        deepest = max(deepest, seen["queued"])
        assert seen["in_flight"] <= 2
        await asyncio.sleep(0.01)
    results = [t.result() for t in burst]
    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 429}
    assert all(int(headers["Retry-After"]) >= 1 for status, headers, _ in results if status == 429)
    assert all(body["done"] for status, _, body in results if status == 200)
    # Two running and eight queued at the least were accepted; the rest were refused honestly.
    assert statuses.count(200) >= 10
    assert deepest <= 8
    # Every accepted request reached the backend exactly once, and never more than two at a time.
    assert await gate.sim_chats() == statuses.count(200)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(gate.sim.url + "/sim/stats") as r:
        assert (await r.json())["peak_in_flight"]["llama3.2:latest"] <= 2


async def test_the_log_line_says_how_long_a_request_queued(gate_factory: Callable[..., Any],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    gate = await gate_factory(max_concurrent=1, reserve_critical=False)
    holders = await gate.hold_slots(1)
    waiter = asyncio.ensure_future(gate.chat("high"))
    await gate.wait_queue("one waiting", queued=1)
    with caplog.at_level(logging.INFO, logger="ollama_proxy.access"):
        await release(holders)
        status, _, _ = await waiter
    assert status == 200
    assert any(" queued=" in r.getMessage() and "status=200" in r.getMessage() for r in caplog.records)
