"""The router end to end (issue 5): the real proxy on a loopback port in front of four simulators.

The fleet is the laptop the weight tables are tuned for: npu 3 W / 800 ms, igpu 12 W / 400 ms,
nvidia 55 W / 120 ms, cpu 28 W / 1500 ms. Every choice is checked twice, once by the proxy's
response headers and once by the simulators' own request counters, so a header that lies fails.

Each routing-choice case starts a fresh fleet: once the proxy has served a request it learns
latency and residency, which rightly change later picks, and a table of cases must not depend on
its own order.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import ollama
import pytest
from fleet import LAPTOP, TIMEOUT, Fleet, chat, only

ROUTING_TOKENS = {"target", "only-candidate", "latency-critical", "power-efficient", "mode-performance",
                  "mode-balanced", "mode-efficiency", "mode-quiet", "mode-ultra-efficiency", "spill-over", "failover"}


@pytest.mark.parametrize(("headers", "expected", "reason_has"), [
    pytest.param({}, "igpu", "mode-balanced; ", id="balanced-default-igpu"),
    pytest.param({"X-Latency-Critical": "true"}, "nvidia", "latency-critical; nvidia est. ",
                 id="latency-critical-fastest"),
    pytest.param({"X-Media-Type": "audio/wav"}, "nvidia", "latency-critical; ", id="live-media-is-latency-critical"),
    pytest.param({"X-Power-Efficient": "1"}, "npu", "power-efficient; ", id="power-efficient-npu"),
    pytest.param({"X-Max-Power-Watts": "15"}, "igpu", "2 excluded", id="power-cap-excludes-hungry"),
    pytest.param({"X-Max-Power-Watts": "5", "X-Latency-Critical": "yes"}, "npu", "only-candidate; ",
                 id="power-cap-beats-latency-wish"),
    # Nothing is loaded yet: each estimate includes a load (1000 ms until one is learned).
    pytest.param({"X-Max-Latency-Ms": "1200"}, "nvidia", "3 excluded", id="latency-budget"),
    pytest.param({"X-Target-Backend": "cpu"}, "cpu", "target; X-Target-Backend cpu", id="explicit-target"),
])
async def test_routing_headers_steer_the_choice_and_the_headers_tell_the_truth(
        fleet_factory: Callable[..., Any], headers: dict[str, str], expected: str, reason_has: str) -> None:
    fleet = await fleet_factory()
    status, out, body = await chat(fleet.url, headers)
    assert status == 200, body
    assert body["done"] is True
    assert out["X-Backend-Used"] == expected
    assert reason_has in out["X-Routing-Reason"]
    assert out["X-Routing-Reason"].split(";")[0] in ROUTING_TOKENS
    assert float(out["X-Estimated-Power-W"]) == LAPTOP[expected][0]
    assert expected not in out["X-Alternatives"].split(",")
    assert await fleet.served() == only(await fleet.served(), expected)


async def test_power_cap_alternatives_are_only_the_frugal_ones(fleet_factory: Callable[..., Any]) -> None:
    fleet = await fleet_factory()
    _, out, _ = await chat(fleet.url, {"X-Max-Power-Watts": "15"})
    assert {out["X-Backend-Used"], *out["X-Alternatives"].split(",")} == {"npu", "igpu"}


async def test_model_present_on_one_backend_goes_there(fleet_factory: Callable[..., Any],
                                                       ollama_client: Callable[[str], ollama.AsyncClient]) -> None:
    fleet = await fleet_factory(extra_models={"cpu": ["phi3:mini"]})
    # Even a latency-critical request: the only backend with the model is the only answer.
    client = ollama.AsyncClient(host=fleet.url, headers={"X-Latency-Critical": "true"})
    try:
        reply = await client.chat(model="phi3:mini", messages=[{"role": "user", "content": "hi"}])
    finally:
        await client._client.aclose()
    assert reply.done
    assert await fleet.served() == only(await fleet.served(), "cpu")
    status, out, _ = await chat(fleet.url, model="phi3:mini")
    assert (status, out["X-Backend-Used"]) == (200, "cpu")
    assert out["X-Routing-Reason"] == "only-candidate; mode-balanced; 3 excluded"
    # A model no backend has stays Ollama's 404, not a routing 503.
    with pytest.raises(ollama.ResponseError) as info:
        await ollama_client(fleet.url).chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404


async def test_no_backend_satisfies_503_says_which_constraint_excluded_which(
        fleet_factory: Callable[..., Any]) -> None:
    fleet = await fleet_factory()
    status, _, body = await chat(fleet.url, {"X-Max-Power-Watts": "20", "X-Max-Latency-Ms": "300"})
    assert status == 503
    excluded = body["excluded"]
    assert set(excluded) == set(LAPTOP)
    assert "latency" in excluded["npu"] and "300 ms" in excluded["npu"]
    assert "latency" in excluded["igpu"]
    assert "power 55 W over the 20 W budget" in excluded["nvidia"]
    assert "power 28 W" in excluded["cpu"]
    assert isinstance(body["error"], str) and "nvidia: power 55 W" in body["error"]
    assert sum((await fleet.served()).values()) == 0


async def test_target_backend_unknown_is_400_listing_ids_and_unhealthy_is_503(
        fleet_factory: Callable[..., Any]) -> None:
    fleet = await fleet_factory(router={"health_interval_s": 0.1})
    status, _, body = await chat(fleet.url, {"X-Target-Backend": "tpu"})
    assert status == 400
    assert "npu, igpu, nvidia, cpu" in body["error"]

    await fleet.kill("nvidia")

    async def noticed() -> bool:
        return (await fleet.backend_status("nvidia"))["reachable"] is False

    await fleet.wait_for(noticed, "the health check to mark nvidia unreachable")
    status, _, body = await chat(fleet.url, {"X-Target-Backend": "nvidia"})
    assert status == 503
    assert "unhealthy" in body["excluded"]["nvidia"]
    # Without the header the others still serve.
    status, out, _ = await chat(fleet.url, {"X-Latency-Critical": "true"})
    assert status == 200 and out["X-Backend-Used"] != "nvidia"


async def test_killed_backend_is_avoided_and_its_requests_fail_over(fleet_factory: Callable[..., Any]) -> None:
    fleet = await fleet_factory()
    await fleet.kill("igpu")  # the balanced pick
    replies = [await chat(fleet.url) for _ in range(4)]
    assert all(status == 200 and body["done"] for status, _, body in replies)
    # Nothing lost, nothing sent twice: the live simulators saw exactly the four requests.
    assert sum((await fleet.served()).values()) == 4
    # After the first failure the router knows: igpu is excluded up front.
    for _, out, _ in replies[1:]:
        assert out["X-Backend-Used"] != "igpu"
        assert "1 excluded" in out["X-Routing-Reason"]
    status = await fleet.backend_status("igpu")
    assert status["reachable"] is False and "cannot reach" in status["last_error"]


@pytest.fixture
async def igpu_process() -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """A simulator in its own process, so it can really be killed: connections reset mid-request.

    (Stopping an in-process SimServer is a graceful shutdown that lets in-flight requests finish.)
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ollama_proxy.sim", "--port", str(port), "--profile", "igpu",
                             "--time-scale", "0.05", "--num-parallel", "4"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            for _ in range(300):
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.get(url + "/api/version") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the simulator process did not come up")
        yield url, proc
    finally:
        proc.kill()
        proc.wait()


async def test_backend_killed_mid_run_costs_no_request_that_had_not_started_streaming(
        fleet_factory: Callable[..., Any], igpu_process: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = igpu_process
    fleet = await fleet_factory(time_scale=0.05, num_parallel=4, endpoints={"igpu": url})

    async def one(i: int) -> tuple[int, Any]:
        status, _, body = await chat(fleet.url, {"X-Request-ID": f"req-{i}"})
        return status, body

    first = [asyncio.ensure_future(one(i)) for i in range(12)]

    async def igpu_busy() -> bool:
        return (await fleet.backend_status("igpu"))["in_flight"] > 0

    await fleet.wait_for(igpu_busy, "a request in flight on igpu")
    proc.kill()
    results = await asyncio.gather(*first, *(one(i) for i in range(12, 24)))
    # Non-streamed answers are relayed only once complete, so a reset mid-answer is still
    # "before the first byte" for the client and fails over.
    assert [status for status, _ in results] == [200] * 24
    assert all(body["done"] for _, body in results)
    assert (await fleet.backend_status("igpu"))["reachable"] is False


async def test_headers_name_the_backend_that_served_after_failover(fleet_factory: Callable[..., Any]) -> None:
    fleet = await fleet_factory()
    await fleet.kill("igpu")
    status, out, _ = await chat(fleet.url)
    assert status == 200 and out["X-Backend-Used"] != "igpu"
    served = await fleet.served()
    assert served == only(served, out["X-Backend-Used"])
    # Every header describes the backend that served, and says why it was not the first pick.
    assert "failed over from igpu (unreachable)" in out["X-Routing-Reason"]
    assert out["X-Backend-Used"] not in out["X-Alternatives"].split(",")
    assert "igpu" not in out["X-Alternatives"].split(",")
    assert float(out["X-Estimated-Power-W"]) == LAPTOP[out["X-Backend-Used"]][0]


@pytest.mark.parametrize(("fault", "breaker_failures"), [
    pytest.param({"mode": "busy"}, 0, id="ollama-503-server-busy-is-backpressure"),
    pytest.param({"mode": "error", "status": 500}, 1, id="500-counts-against-the-backend"),
])
async def test_error_before_first_byte_fails_over(fleet_factory: Callable[..., Any], fault: dict[str, Any],
                                                  breaker_failures: int) -> None:
    fleet = await fleet_factory()
    # Only the chat: sizing's /api/show must not take the fault.
    await fleet.fault("igpu", count=1, paths=["/api/chat"], **fault)
    status, out, body = await chat(fleet.url)
    assert status == 200 and body["done"]
    assert (await fleet.sim_stats("igpu"))["faults_triggered"] == 1
    served = await fleet.served()
    # igpu counted the refused attempt; the backend named in the headers answered.
    assert out["X-Backend-Used"] != "igpu"
    assert served == {**only(served, out["X-Backend-Used"]), "igpu": 1}
    igpu = await fleet.backend_status("igpu")
    assert igpu["consecutive_failures"] == breaker_failures
    assert igpu["breaker"] == "closed"


async def test_failure_after_first_byte_ends_the_stream_with_an_error_object(
        fleet_factory: Callable[..., Any], ollama_client: Callable[[str], ollama.AsyncClient]) -> None:
    fleet = await fleet_factory()
    await fleet.fault("igpu", mode="drop_mid_stream", after_chunks=2, count=1, paths=["/api/chat"])
    parts = []
    with pytest.raises(ollama.ResponseError) as info:
        async for part in await ollama_client(fleet.url).chat(
                model="llama3.2", stream=True, messages=[{"role": "user", "content": "a long story please"}]):
            parts.append(part)
    assert len(parts) >= 1
    assert "igpu" in str(info.value)
    # Bytes had reached the client: no failover, so no other backend saw the request.
    assert await fleet.served() == only(await fleet.served(), "igpu")


async def test_tags_and_ps_are_merged_and_say_where(fleet_factory: Callable[..., Any],
                                                     ollama_client: Callable[[str], ollama.AsyncClient]) -> None:
    fleet = await fleet_factory(extra_models={"cpu": ["phi3:mini"], "npu": ["gemma3:1b"]})
    client = ollama_client(fleet.url)
    names = [m.model for m in (await client.list()).models]
    assert sorted(names) == sorted({"llama3.2:latest", "qwen3:4b", "nomic-embed-text:latest", "phi3:mini",
                                    "gemma3:1b"})
    tags = {m["model"]: m for m in (await fleet.get("/api/tags"))["models"]}
    assert tags["phi3:mini"]["backends"] == ["cpu"]
    assert tags["gemma3:1b"]["backend"] == "npu"
    assert sorted(tags["llama3.2:latest"]["backends"]) == sorted(LAPTOP)

    for target, model in (("nvidia", "qwen3:4b"), ("cpu", "phi3:mini")):
        status, _, _ = await chat(fleet.url, {"X-Target-Backend": target}, model=model)
        assert status == 200
    loaded = {m.model for m in (await client.ps()).models}
    assert loaded == {"qwen3:4b", "phi3:mini"}
    ps = {m["model"]: m["backend"] for m in (await fleet.get("/api/ps"))["models"]}
    assert ps == {"qwen3:4b": "nvidia", "phi3:mini": "cpu"}
    # A targeted listing is that backend's own answer.
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, \
            s.get(fleet.url + "/api/tags", headers={"X-Target-Backend": "npu"}) as r:
        assert "phi3:mini" not in {m["model"] for m in (await r.json())["models"]}


async def test_backends_endpoint_shows_state(fleet_factory: Callable[..., Any]) -> None:
    fleet = await fleet_factory(extra_models={"cpu": ["phi3:mini"]})
    await fleet.kill("cpu")
    status, _, _ = await chat(fleet.url, {"X-Target-Backend": "cpu"})
    assert status == 502
    view = await fleet.get("/backends")
    assert view["mode"] == "balanced"
    by_id = {b["id"]: b for b in view["backends"]}
    assert list(by_id) == list(LAPTOP)
    for backend, (watts, latency_ms) in LAPTOP.items():
        entry = by_id[backend]
        assert entry["hardware"] == backend
        assert entry["characteristics"]["power_watts"] == watts
        assert entry["characteristics"]["avg_latency_ms"] == latency_ms
        assert entry["queue"] == {"best-effort": 0, "normal": 0, "high": 0, "critical": 0}
        assert entry["in_flight"] == 0
        assert entry["thermal"]["level"] == "cool"
        assert "llama3.2:latest" in entry["models"]
    assert "phi3:mini" in by_id["cpu"]["models"]
    assert by_id["cpu"]["reachable"] is False and by_id["cpu"]["consecutive_failures"] == 1
    assert by_id["npu"]["reachable"] is True and by_id["npu"]["breaker"] == "closed"


@pytest.mark.parametrize(("mode", "expected"), [
    pytest.param("performance", {"nvidia"}, id="performance-nvidia"),
    pytest.param("balanced", {"igpu"}, id="balanced-igpu"),
    pytest.param("efficiency", {"npu"}, id="efficiency-npu"),
    pytest.param("ultra-efficiency", {"npu"}, id="ultra-efficiency-npu"),
    pytest.param("quiet", {"npu", "igpu"}, id="quiet-npu-or-igpu"),
])
async def test_efficiency_mode_changes_routing(fleet_factory: Callable[..., Any], mode: str,
                                               expected: set[str]) -> None:
    fleet = await fleet_factory()
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, \
            s.post(fleet.url + "/efficiency", json={"mode": mode}) as r:
        assert r.status == 200
        assert (await r.json())["effective_mode"] == mode
    status, out, _ = await chat(fleet.url)
    assert status == 200
    assert out["X-Backend-Used"] in expected
    # Ultra-efficiency's 10 W cap leaves the npu alone.
    assert out["X-Routing-Reason"].startswith(
        "only-candidate; mode-ultra-efficiency" if mode == "ultra-efficiency" else f"mode-{mode}; ")
    assert (await fleet.get("/efficiency"))["mode"] == mode


@pytest.mark.parametrize("body", [
    pytest.param({"mode": "turbo"}, id="unknown-mode"),
    pytest.param({"speed": "fast"}, id="no-mode-field"),
    pytest.param("efficiency", id="not-an-object"),
])
async def test_efficiency_rejects_unknown_mode_with_400(fleet_factory: Callable[..., Any], body: Any) -> None:
    fleet = await fleet_factory()
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.post(fleet.url + "/efficiency", json=body) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert "performance" in error and "ultra-efficiency" in error
    assert (await fleet.get("/efficiency"))["mode"] == "balanced"


async def test_pull_and_create_find_a_backend_although_the_new_model_exists_nowhere(
        fleet_factory: Callable[..., Any], ollama_client: Callable[[str], ollama.AsyncClient]) -> None:
    fleet = await fleet_factory(extra_models={"cpu": ["phi3:mini"]})
    client = ollama_client(fleet.url)
    assert (await client.pull("brand-new:1b")).status == "success"
    # A create runs where its base model is.
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, \
            s.post(fleet.url + "/api/create", json={"model": "mine", "from": "phi3:mini", "stream": False}) as r:
        assert r.status == 200, await r.text()
        assert r.headers["X-Backend-Used"] == "cpu"
    # The proxy learns the new models at once, so the next call routes to them.
    await fleet.wait_for(lambda: _listed(fleet, "mine:latest"), "the created model to be listed")
    status, out, _ = await chat(fleet.url, model="mine")
    assert status == 200 and out["X-Backend-Used"] == "cpu"


async def _listed(fleet: Fleet, model: str) -> bool:
    return model in {m["model"] for m in (await fleet.get("/api/tags"))["models"]}


async def test_management_calls_go_to_the_configured_default_backend(fleet_factory: Callable[..., Any],
                                                                    ollama_client: Callable[..., Any]) -> None:
    fleet = await fleet_factory(router={"default_backend": "nvidia"})
    assert (await ollama_client(fleet.url).pull("another:2b")).status == "success"
    assert (await fleet.sim_stats("nvidia"))["requests"].get("/api/pull") == 1
    for other in ("npu", "igpu", "cpu"):
        assert "/api/pull" not in (await fleet.sim_stats(other))["requests"]


async def test_power_aware_off_takes_power_out_of_the_choice(fleet_factory: Callable[..., Any]) -> None:
    aware = await fleet_factory(router={"default_mode": "efficiency"})
    blind = await fleet_factory(router={"default_mode": "efficiency", "power_aware": False})
    _, aware_headers, _ = await chat(aware.url)
    _, blind_headers, _ = await chat(blind.url)
    assert aware_headers["X-Backend-Used"] == "npu"  # the 3 W one, when watts count
    assert blind_headers["X-Backend-Used"] != "npu"
    assert "lower power" not in blind_headers["X-Routing-Reason"]


async def test_auto_optimize_off_keeps_auto_at_balanced(fleet_factory: Callable[..., Any]) -> None:
    fleet = await fleet_factory(router={"default_mode": "auto", "auto_optimize": False})
    efficiency = await fleet.get("/efficiency")
    assert efficiency["mode"] == "auto" and efficiency["effective_mode"] == "balanced"
    assert "auto_optimize is off" in efficiency["reason"]
