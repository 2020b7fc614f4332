"""Issue 11 end to end: the routing headers and modes do what they promise, learned from real work only.

The real proxy in front of simulators with the laptop's characteristics (`fleet.py`); every pick is
read from the response headers and checked against the simulators' own counters where it matters.
Each numbered measurement of the issue is one test here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import pytest
from fleet import LAPTOP, TIMEOUT, Fleet, chat, only
from test_system_state import HW_THERMAL_SLOWDOWN, Laptop, sampled


async def _post(url: str, path: str, body: dict[str, Any], headers: Mapping[str, str] | None = None
                ) -> tuple[int, Mapping[str, str], Any]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, \
            s.post(url + path, json=body, headers=dict(headers or {})) as r:
        return r.status, r.headers.copy(), await r.json()


async def _mode(fleet: Fleet, mode: str) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.post(fleet.url + "/efficiency", json={"mode": mode}) as r:
        assert r.status == 200


# 1. Load-only calls do not poison learned latency.

async def test_preload_and_unload_storms_do_not_change_the_choice(fleet_factory: Callable[..., Any]) -> None:
    fleet = await fleet_factory()
    cpu = {"X-Target-Backend": "cpu"}
    for _ in range(5):  # `ollama run`'s preload, then `ollama stop`'s unload, as a web UI would send them
        status, _, body = await _post(fleet.url, "/api/generate", {"model": "llama3.2"}, cpu)
        assert (status, body["done_reason"]) == (200, "load")
        status, _, body = await _post(fleet.url, "/api/chat", {"model": "llama3.2", "messages": [],
                                                               "keep_alive": 0}, cpu)
        assert (status, body["done_reason"]) == (200, "unload")
    assert (await fleet.backend_status("cpu"))["learned_latency"] == {}
    _, out, _ = await chat(fleet.url, {"X-Latency-Critical": "true"})
    assert out["X-Backend-Used"] == "nvidia"
    assert int(out["X-Estimated-Latency-Ms"]) > 100
    _, out, _ = await chat(fleet.url, {"X-Max-Latency-Ms": "600"})
    assert out["X-Backend-Used"] == "nvidia"  # loaded now: 120 ms; the cpu's 2 ms was never real
    await _mode(fleet, "performance")
    _, out, _ = await chat(fleet.url)
    assert out["X-Backend-Used"] == "nvidia" and out["X-Routing-Reason"].startswith("mode-performance; nvidia est.")


# 2. X-Latency-Critical and performance mode mean "fastest" by learned latency.

async def _warm_everywhere(fleet: Fleet) -> None:
    # Twice each: the first answer includes the load, which is learned apart.
    for backend in LAPTOP:
        for _ in range(2):
            status, _, _ = await chat(fleet.url, {"X-Target-Backend": backend})
            assert status == 200
    learned = {b: (await fleet.backend_status(b))["learned_latency"] for b in LAPTOP}
    assert all("llama3.2:latest" in models for models in learned.values()), learned


async def test_latency_critical_goes_to_the_fastest_by_learned_latency_and_elsewhere_when_queued(
        fleet_factory: Callable[..., Any]) -> None:
    fleet = await fleet_factory(time_scale=0.2, reply_tokens=(10, 10), max_concurrent=1)
    await _warm_everywhere(fleet)
    for _ in range(6):
        _, out, _ = await chat(fleet.url, {"X-Latency-Critical": "true"})
        assert out["X-Backend-Used"] == "nvidia"
        assert out["X-Routing-Reason"].startswith("latency-critical; nvidia est. ")
        assert "random" not in out["X-Routing-Reason"]
    await _mode(fleet, "performance")
    _, out, _ = await chat(fleet.url)
    assert out["X-Backend-Used"] == "nvidia"
    # One slow answer holds nvidia's only slot and six more wait for it: now the igpu answers sooner.
    await fleet.fault("nvidia", mode="slow", delay_s=1.5, count=1, paths=["/api/chat"])
    held = [asyncio.ensure_future(chat(fleet.url, {"X-Target-Backend": "nvidia"})) for _ in range(7)]

    async def queued() -> bool:
        return sum((await fleet.backend_status("nvidia"))["queue"].values()) >= 6

    await fleet.wait_for(queued, "six requests queued behind nvidia")
    # A one-token reply: the simulators report generation speeds unscaled (time_scale does not touch
    # eval_duration), so a longer reply would weigh five times what it takes here.
    _, out, _ = await _post(fleet.url, "/api/chat", _chat_asking(1), {"X-Latency-Critical": "true"})
    assert out["X-Backend-Used"] == "igpu", out["X-Routing-Reason"]
    await asyncio.gather(*held)


# 3. Efficiency mode counts congestion.

async def test_efficiency_spills_over_under_load(fleet_factory: Callable[..., Any]) -> None:
    fleet = await fleet_factory(time_scale=0.3, reply_tokens=(20, 20), max_concurrent=2,
                                router={"default_mode": "efficiency"})
    replies = await asyncio.gather(*(chat(fleet.url) for _ in range(12)))
    assert all(status == 200 for status, _, _ in replies)
    used = [out["X-Backend-Used"] for _, out, _ in replies]
    reasons = [out["X-Routing-Reason"] for _, out, _ in replies]
    served = await fleet.served()
    assert sum(served.values()) == 12 and served["npu"] == used.count("npu")
    # Two slots, and a third waiting would pass the 1000 ms patience: the rest go to the next lowest power.
    assert 2 <= served["npu"] <= 4, used
    assert any(r.startswith("spill-over; mode-efficiency: npu queue wait ") for r in reasons), reasons


# 4. Ultra-efficiency honours its power cap.

async def test_ultra_efficiency_refuses_above_its_cap(fleet_factory: Callable[..., Any]) -> None:
    fleet = await fleet_factory(extra_models={"cpu": ["phi3:mini"], "nvidia": ["phi3:mini"]},
                                router={"default_mode": "ultra-efficiency"})
    status, out, body = await chat(fleet.url, model="phi3:mini")
    assert status == 503, body
    assert out["X-Routing-Reason"].startswith(
        "power-cap; ultra-efficiency mode allows at most 10 W (router.ultra_efficiency_max_watts)")
    assert set(out["X-Routing-Excluded"].split(",")) == set(LAPTOP)
    assert "28 W over ultra-efficiency's 10 W cap" in body["excluded"]["cpu"]
    assert sum((await fleet.served()).values()) == 0
    # Within the cap it serves; an explicit target over it is served, and says so.
    status, out, _ = await chat(fleet.url)
    assert (status, out["X-Backend-Used"]) == (200, "npu")
    status, out, _ = await chat(fleet.url, {"X-Target-Backend": "cpu"}, model="phi3:mini")
    assert (status, out["X-Backend-Used"]) == (200, "cpu")
    assert "28 W, over ultra-efficiency's 10 W cap" in out["X-Routing-Warning"]


# 5. The seed's priority 0..3 decides between identical backends.

@pytest.mark.parametrize(("priorities", "winner"), [pytest.param((3, 0), "a", id="a-3-b-0"),
                                                     pytest.param((0, 3), "b", id="a-0-b-3")])
async def test_priority_decides_between_twins(sim_factory: Callable[..., Any], proxy_factory: Callable[..., Any],
                                              priorities: tuple[int, int], winner: str) -> None:
    sims = {bid: await sim_factory(profile="igpu") for bid in ("a", "b")}
    url = await proxy_factory({"backends": [
        {"id": bid, "hardware": "igpu", "endpoint": sim.url,
         "characteristics": {"power_watts": 12, "avg_latency_ms": 400, "priority": p}}
        for (bid, sim), p in zip(sims.items(), priorities, strict=True)]})
    _, out, _ = await chat(url)
    assert out["X-Backend-Used"] == winner
    assert "higher priority" in out["X-Routing-Reason"]
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        for _ in range(8):  # names no model: everything but priority is equal
            async with s.get(url + "/api/version") as r:
                assert r.headers["X-Backend-Used"] == winner


# 6. Refusals explain themselves; disabled backends are left alone; hot targets warn.

async def test_a_refusal_carries_the_routing_headers(fleet_factory: Callable[..., Any]) -> None:
    fleet = await fleet_factory()
    status, out, body = await chat(fleet.url, {"X-Max-Power-Watts": "1"})
    assert status == 503
    assert out["X-Routing-Reason"].startswith("max-power; X-Max-Power-Watts 1 W")
    assert set(out["X-Routing-Excluded"].split(",")) == set(LAPTOP)
    assert body["excluded"]["npu"] == "power 3 W over the 1 W budget"
    status, out, _ = await chat(fleet.url, {"X-Target-Backend": "tpu"})
    assert status == 400 and out["X-Routing-Reason"].startswith("unknown-target; ")
    status, out, _ = await chat(fleet.url, model="no-such-model")
    assert status == 404 and out["X-Routing-Reason"].startswith("no-model; ")


async def test_a_disabled_backend_is_not_probed_nor_shown_reachable(sim_factory: Callable[..., Any],
                                                                  proxy_factory: Callable[..., Any]) -> None:
    sims = {bid: await sim_factory(profile=bid) for bid in ("igpu", "cpu")}
    url = await proxy_factory({"router": {"health_interval_s": 0.05, "discovery_interval_s": 0.05}, "backends": [
        {"id": bid, "hardware": bid, "endpoint": sim.url, "enabled": bid == "igpu"} for bid, sim in sims.items()]})
    await asyncio.sleep(0.3)
    fleet = Fleet(url, sims)
    assert (await fleet.sim_stats("cpu"))["requests"] == {}
    health = await fleet.get("/health")
    assert health["backends"]["cpu"]["reachable"] is not True
    assert "disabled" in health["backends"]["cpu"]["error"]
    assert health["backends"]["igpu"]["reachable"] is True
    status, out, body = await chat(url, {"X-Target-Backend": "cpu"})
    assert status == 503 and body["excluded"] == {"cpu": "disabled"}
    assert out["X-Routing-Reason"].startswith("target-unavailable; cpu: disabled")


async def test_an_explicit_target_at_a_critical_temperature_is_served_with_a_warning(
        sim_factory: Callable[..., Any], proxy_factory: Callable[..., Any], tmp_path: Any) -> None:
    laptop = Laptop(tmp_path)
    laptop.power(plugged=True, percent=80)
    laptop.cpu(50)
    laptop.gpu(93, HW_THERMAL_SLOWDOWN)
    sims = {hw: await sim_factory(profile=hw) for hw in ("nvidia", "igpu")}
    url = await proxy_factory({"system": laptop.system_config(), "backends": [
        {"id": hw, "hardware": hw, "endpoint": sim.url} for hw, sim in sims.items()]})
    fleet = Fleet(url, sims)
    await sampled(fleet, gpu=93)
    _, out, _ = await chat(url, {"X-Latency-Critical": "true"})
    assert out["X-Backend-Used"] == "igpu"  # spared
    status, out, _ = await chat(url, {"X-Target-Backend": "nvidia"})
    assert (status, out["X-Backend-Used"]) == (200, "nvidia")
    assert out["X-Routing-Warning"].startswith("nvidia is at a critical temperature (")
    assert await fleet.served() == {**only(await fleet.served(), "nvidia"), "igpu": 1}


# 7. The estimate counts generating the expected reply at each backend's learned speed.

def _chat_asking(num_predict: int) -> dict[str, Any]:
    return {"model": "llama3.2", "stream": False, "messages": [{"role": "user", "content": "tell me a story"}],
            "options": {"num_predict": num_predict}}


async def test_a_long_expected_reply_goes_to_the_best_throughput(fleet_factory: Callable[..., Any]) -> None:
    # Instant simulators: every first token takes the same few milliseconds; the reported speeds
    # (Ollama's eval_count / eval_duration) are the profiles': npu 15, igpu 30, nvidia 90, cpu 8 tokens/s.
    fleet = await fleet_factory()
    for backend in LAPTOP:
        for _ in range(2):  # the first one loads (at the context the long budget needs), the second is learned
            status, _, _ = await _post(fleet.url, "/api/chat", _chat_asking(2000), {"X-Target-Backend": backend})
            assert status == 200
    speeds = {b: (await fleet.backend_status(b))["learned_latency"]["llama3.2:latest"]["tokens_per_s"]
              for b in LAPTOP}
    assert speeds == {"npu": 15, "igpu": 30, "nvidia": 90, "cpu": 8}
    for _ in range(4):
        _, out, _ = await _post(fleet.url, "/api/chat", _chat_asking(2000), {"X-Latency-Critical": "true"})
        assert out["X-Backend-Used"] == "nvidia", out["X-Routing-Reason"]
        assert out["X-Routing-Reason"].startswith("latency-critical; nvidia est. ")
        assert int(out["X-Estimated-Latency-Ms"]) >= 2000 * 1000 // 90  # the reply's generation, not just its start
    # When nvidia's first token comes late, a one-token reply is answered sooner elsewhere; a long one still is not.
    await fleet.fault("nvidia", mode="slow", delay_s=0.6, count=4, paths=["/api/chat"])
    for _ in range(4):
        await _post(fleet.url, "/api/chat", _chat_asking(2000), {"X-Target-Backend": "nvidia"})
    _, out, _ = await _post(fleet.url, "/api/chat", _chat_asking(1), {"X-Latency-Critical": "true"})
    assert out["X-Backend-Used"] == "igpu", out["X-Routing-Reason"]
    await _mode(fleet, "performance")
    _, out, _ = await _post(fleet.url, "/api/chat", _chat_asking(2000))
    assert out["X-Backend-Used"] == "nvidia", out["X-Routing-Reason"]
    assert out["X-Routing-Reason"].startswith("mode-performance; nvidia est. ")


async def test_embeddings_do_not_teach_where_chat_goes_nor_chats_where_embeddings_go(
        fleet_factory: Callable[..., Any]) -> None:
    fleet = await fleet_factory()
    embed = {"model": "llama3.2", "input": "a sentence to embed"}
    for _ in range(4):  # embedding with the chat model on the cpu: milliseconds each, the first one loads
        status, _, _ = await _post(fleet.url, "/api/embed", embed, {"X-Target-Backend": "cpu"})
        assert status == 200
    assert "llama3.2:latest" in (await fleet.backend_status("cpu"))["learned_latency"]
    # A chat is still estimated by the configured guesses: nvidia's 120 ms plus a load beats the cpu's 1500 ms.
    _, out, _ = await chat(fleet.url, {"X-Latency-Critical": "true"})
    assert out["X-Backend-Used"] == "nvidia", out["X-Routing-Reason"]
    _, out, _ = await chat(fleet.url, {"X-Target-Backend": "cpu"})
    assert out["X-Estimated-Latency-Ms"] == "1500"  # its configured avg_latency_ms, not the embeddings' few ms
    # The other way round: chats learned on the igpu say nothing of how fast it embeds.
    for _ in range(4):
        status, _, _ = await chat(fleet.url, {"X-Target-Backend": "igpu"})
        assert status == 200
    assert (await fleet.backend_status("igpu"))["learned_latency"]["llama3.2:latest"]["tokens_per_s"] == 30
    status, out, _ = await _post(fleet.url, "/api/embed", embed, {"X-Target-Backend": "igpu"})
    assert (status, out["X-Estimated-Latency-Ms"]) == (200, "400")  # its configured guess, not the chats' few ms
