"""Issue 11, pure: each header and mode does what it promises, from the estimates alone.

The fleet is the issue's: npu 3 W / 800 ms, igpu 12 W / 400 ms, nvidia 55 W / 150 ms,
cpu 28 W / 2000 ms, every backend with the model.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from ollama_proxy.config.load import validate
from ollama_proxy.core.modes import EfficiencyMode
from ollama_proxy.core.operations import Operation
from ollama_proxy.core.routing.headers import decision_headers
from ollama_proxy.core.routing.select import select_backend
from ollama_proxy.core.routing.state import BackendView, LatencyStats, RouteRequest, ThermalLevel, ThermalState
from ollama_proxy.errors import NoBackendAvailable
from ollama_proxy.service.pool import BackendPool
from ollama_proxy.service.router import Router
from ollama_proxy.service.tasks import TaskSet
from ollama_proxy.testing.memory import MemoryTransport

MODEL = "llama3.2:latest"
ISSUE = {"npu": (3, 800), "igpu": (12, 400), "nvidia": (55, 150), "cpu": (28, 2000)}


def _fleet(*, loaded: bool = True, learned: bool = True, **per_backend: dict[str, object]) -> list[BackendView]:
    views = []
    for bid, (watts, latency_ms) in ISSUE.items():
        stats = {MODEL: LatencyStats(latency_ms, None, latency_ms * 3, 5)} if learned else {}
        view = BackendView(bid, hardware=bid, power_watts=watts, avg_latency_ms=latency_ms, max_concurrent=4,
                           models=frozenset({MODEL}), loaded={MODEL: 4096} if loaded else {}, latency=stats)
        views.append(replace(view, **per_backend.get(bid, {})))
    return views


def _decide(request: RouteRequest, views: list[BackendView], mode: EfficiencyMode = EfficiencyMode.BALANCED,
            seed: int = 0, cap: float | None = 10.0) -> tuple[str, str]:
    d = select_backend(request, views, mode, rng=random.Random(seed), power_cap_w=cap)
    return d.backend_id, d.reason


def _router() -> Router:
    config = validate({"backends": [
        {"id": bid, "hardware": bid, "endpoint": f"http://127.0.0.1:{22000 + i}",
         "characteristics": {"power_watts": w, "avg_latency_ms": ms}}
        for i, (bid, (w, ms)) in enumerate(ISSUE.items())]})
    pool = BackendPool(config.backends, config.router, MemoryTransport(), TaskSet())
    for backend in pool:
        backend.reachable, backend.models = True, {MODEL}
    return Router(config, pool, rng=random.Random(0))


# 1. Load-only calls do not poison learned latency.

@pytest.mark.parametrize(("body", "final"), [
    pytest.param({"model": MODEL}, {"done": True, "done_reason": "load"}, id="preload"),
    pytest.param({"model": MODEL, "keep_alive": 0}, {"done": True, "done_reason": "unload"}, id="unload"),
])
def test_preloads_to_the_cpu_do_not_make_it_the_fastest(body: dict[str, object], final: dict[str, object]) -> None:
    router = _router()
    cpu = router.pool.get("cpu")
    assert cpu is not None
    for _ in range(5):
        router.observe_latency(cpu, MODEL, ttft_ms=2.0, total_ms=3.0, final=final, operation=Operation.GENERATE,
                               body=body)
    assert router.latency.get("cpu", MODEL) is None
    for request in (RouteRequest(model=MODEL, latency_critical=True), RouteRequest(model=MODEL)):
        assert router.decide(request).backend_id != "cpu"
    router.choose_mode(EfficiencyMode.PERFORMANCE)
    decision = router.decide(RouteRequest(model=MODEL))
    assert decision.backend_id == "nvidia" and decision.estimated_latency_ms > 2


def test_a_load_reported_by_a_request_is_learned_and_charged_where_not_resident() -> None:
    router = _router()
    nvidia = router.pool.get("nvidia")
    assert nvidia is not None
    router.observe_latency(nvidia, MODEL, ttft_ms=3_150, total_ms=3_500, operation=Operation.CHAT,
                           body={"messages": [{"role": "user", "content": "hi"}]},
                           final={"done_reason": "stop", "load_duration": 3_000_000_000})
    assert router.latency.load_ms("nvidia", MODEL) == 3_000
    assert router.latency.get("nvidia", MODEL).ttft_ms == pytest.approx(150)  # type: ignore[union-attr]
    assert router.decide(RouteRequest(model=MODEL, latency_critical=True)).scores["nvidia"].estimated_latency_ms \
        == pytest.approx(3_150)


# 2. X-Latency-Critical and performance mode mean "fastest".

@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(("request_", "mode", "token"), [
    pytest.param(RouteRequest(model=MODEL, latency_critical=True), EfficiencyMode.BALANCED, "latency-critical",
                 id="latency-critical"),
    pytest.param(RouteRequest(model=MODEL, media_type="audio"), EfficiencyMode.EFFICIENCY, "latency-critical",
                 id="live-media"),
    pytest.param(RouteRequest(model=MODEL), EfficiencyMode.PERFORMANCE, "mode-performance", id="performance"),
])
def test_fastest_by_learned_latency_with_no_random_near_tie(request_: RouteRequest, mode: EfficiencyMode,
                                                           token: str, seed: int) -> None:
    backend, reason = _decide(request_, _fleet(), mode, seed)
    assert backend == "nvidia"
    assert reason == f"{token}; nvidia est. 150 ms vs igpu 400 ms"


def test_a_slower_resident_backend_does_not_beat_a_free_fast_one() -> None:
    # The seed's complaint: residency kept requests on igpu while nvidia was free and faster.
    views = _fleet(nvidia={"loaded": {}, "load_ms": {MODEL: 200.0}})
    assert _decide(RouteRequest(model=MODEL, latency_critical=True), views)[0] == "nvidia"  # 350 ms < 400 ms
    views = _fleet(nvidia={"loaded": {}, "load_ms": {MODEL: 2_000.0}})
    assert _decide(RouteRequest(model=MODEL, latency_critical=True), views)[0] == "igpu"  # 2150 ms > 400 ms


def test_the_fastest_queue_makes_it_slower_and_the_pick_moves() -> None:
    views = _fleet(nvidia={"in_flight": 4, "queued": (0, 4, 0, 0)})  # 5 ahead of a 4-slot backend
    backend, reason = _decide(RouteRequest(model=MODEL, latency_critical=True), views)
    assert backend == "igpu" and reason.startswith("latency-critical; igpu est. 400 ms vs nvidia ")


def test_truly_equal_estimates_are_the_only_random_ones() -> None:
    views = [BackendView(f"twin{i}", models=frozenset({MODEL}), loaded={MODEL: 4096}) for i in range(2)]
    picks = {_decide(RouteRequest(model=MODEL, latency_critical=True), views, seed=s)[0] for s in range(20)}
    assert picks == {"twin0", "twin1"}


# 3. Efficiency mode counts congestion.

def test_efficiency_spills_over_when_the_npu_queue_passes_its_patience() -> None:
    # The model is resident only on the npu, so the score prefers it even when it is busy.
    cold = {"loaded": {}}
    calm = _fleet(npu={"max_concurrent": 2, "in_flight": 1}, igpu=cold, nvidia=cold, cpu=cold)
    assert _decide(RouteRequest(model=MODEL), calm, EfficiencyMode.EFFICIENCY)[0] == "npu"
    # Two running and four waiting: the wait is 6000 ms.
    jammed = _fleet(npu={"max_concurrent": 2, "in_flight": 2, "queued": (0, 4, 0, 0)}, igpu=cold, nvidia=cold,
                    cpu=cold)
    backend, reason = _decide(RouteRequest(model=MODEL), jammed, EfficiencyMode.EFFICIENCY)
    assert backend == "igpu"  # the next lowest-power backend with the model
    assert reason == "spill-over; mode-efficiency: npu queue wait 6000 ms over the 1000 ms patience"


# 4. Ultra-efficiency honours its power cap.

def test_ultra_efficiency_refuses_above_the_cap_and_names_it() -> None:
    gone = {"models": frozenset(), "loaded": {}}
    views = _fleet(npu=gone, igpu=gone)
    with pytest.raises(NoBackendAvailable) as info:
        _decide(RouteRequest(model=MODEL), views, EfficiencyMode.ULTRA_EFFICIENCY)
    assert info.value.status == 503
    assert info.value.routing_reason is not None and info.value.routing_reason.startswith(
        "power-cap; ultra-efficiency mode allows at most 10 W (router.ultra_efficiency_max_watts)")
    assert info.value.reasons["cpu"] == ("power 28 W over ultra-efficiency's 10 W cap "
                                         "(router.ultra_efficiency_max_watts)")
    assert "npu" in info.value.reasons  # the model is not there
    # The other modes have no cap.
    assert _decide(RouteRequest(model=MODEL), views, EfficiencyMode.EFFICIENCY)[0] == "cpu"


def test_an_explicit_target_over_the_cap_is_served_with_a_warning() -> None:
    decision = select_backend(RouteRequest(model=MODEL, target="nvidia"), _fleet(), EfficiencyMode.ULTRA_EFFICIENCY,
                              rng=random.Random(0), power_cap_w=10.0)
    assert decision.backend_id == "nvidia" and decision.reason.startswith("target; ")
    assert "55 W, over ultra-efficiency's 10 W cap" in decision_headers(decision)["X-Routing-Warning"]


# 5. Priority on the seed's 0..3 scale decides between twins.

@pytest.mark.parametrize("mode", [EfficiencyMode.BALANCED, EfficiencyMode.EFFICIENCY, EfficiencyMode.PERFORMANCE])
@pytest.mark.parametrize(("first", "second", "winner"), [(3, 0, "a"), (0, 3, "b"), (1, 2, "b"), (2, 1, "a")])
def test_priority_decides_between_identical_backends(mode: EfficiencyMode, first: int, second: int,
                                                     winner: str) -> None:
    views = [BackendView("a", priority=first, models=frozenset({MODEL})),
             BackendView("b", priority=second, models=frozenset({MODEL}))]
    assert {_decide(RouteRequest(model=MODEL), views, mode, seed)[0] for seed in range(10)} == {winner}


# 6. Refusals and picks explain themselves with a token.

@pytest.mark.parametrize(("request_", "token"), [
    pytest.param(RouteRequest(model=MODEL, max_power_watts=1), "max-power; X-Max-Power-Watts 1 W", id="max-power"),
    pytest.param(RouteRequest(model=MODEL, max_latency_ms=10), "max-latency; X-Max-Latency-Ms 10 ms",
                 id="max-latency"),
    pytest.param(RouteRequest(model="nowhere"), "no-model; ", id="no-model"),
    pytest.param(RouteRequest(model=MODEL, target="tpu"), "unknown-target; ", id="unknown-target"),
])
def test_refusals_carry_a_reason_token(request_: RouteRequest, token: str) -> None:
    with pytest.raises(NoBackendAvailable) as info:
        _decide(request_, _fleet())
    assert info.value.routing_reason is not None and info.value.routing_reason.startswith(token)


def test_a_target_at_a_critical_temperature_is_served_with_a_warning() -> None:
    hot = ThermalState(ThermalLevel.CRITICAL, 99.0, "trip point")
    views = _fleet(nvidia={"thermal": hot})
    assert _decide(RouteRequest(model=MODEL, latency_critical=True), views)[0] == "igpu"  # spared
    decision = select_backend(RouteRequest(model=MODEL, target="nvidia"), views, rng=random.Random(0))
    assert decision.backend_id == "nvidia"
    assert decision_headers(decision)["X-Routing-Warning"] == (
        "nvidia is at a critical temperature (trip point); served because X-Target-Backend asked for it")
