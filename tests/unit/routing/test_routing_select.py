"""Selection: filters, scores and the reasons, with the four reference hardware profiles."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from ollama_proxy.core.admission import Priority
from ollama_proxy.core.modes import EfficiencyMode
from ollama_proxy.core.routing.latency import DEFAULT_LOAD_MS, DEFAULT_REPLY_TOKENS
from ollama_proxy.core.routing.select import fail_over, select_backend
from ollama_proxy.core.routing.state import (
    BackendView,
    BreakerState,
    LatencyStats,
    RouteRequest,
    ThermalLevel,
    ThermalState,
)
from ollama_proxy.core.routing.weights import Weights
from ollama_proxy.errors import NoBackendAvailable

MODEL = "llama3"


def _profiles(**overrides: object) -> list[BackendView]:
    """npu 3 W/800 ms, igpu 12 W/400 ms, nvidia 55 W/120 ms, cpu 28 W/1500 ms, all with the model."""
    base = [
        BackendView("npu", hardware="npu", power_watts=3, avg_latency_ms=800),
        BackendView("igpu", hardware="igpu", power_watts=12, avg_latency_ms=400),
        BackendView("nvidia", hardware="nvidia", power_watts=55, avg_latency_ms=120),
        BackendView("cpu", hardware="cpu", power_watts=28, avg_latency_ms=1500),
    ]
    return [replace(b, models=frozenset({MODEL}), **overrides) for b in base]


def _pick(request: RouteRequest, backends: list[BackendView],
          mode: EfficiencyMode = EfficiencyMode.BALANCED) -> str:
    return select_backend(request, backends, mode, rng=random.Random(0)).backend_id


def _with(backends: list[BackendView], backend_id: str, **changes: object) -> list[BackendView]:
    return [replace(b, **changes) if b.id == backend_id else b for b in backends]


@pytest.mark.parametrize(("mode", "expected"), [
    pytest.param(EfficiencyMode.PERFORMANCE, {"nvidia"}, id="performance-fastest"),
    pytest.param(EfficiencyMode.BALANCED, {"igpu"}, id="balanced-middle"),
    pytest.param(EfficiencyMode.AUTO, {"igpu"}, id="auto-unresolved-acts-balanced"),
    pytest.param(EfficiencyMode.EFFICIENCY, {"npu"}, id="efficiency-frugal"),
    pytest.param(EfficiencyMode.ULTRA_EFFICIENCY, {"npu"}, id="ultra-efficiency-frugal"),
    pytest.param(EfficiencyMode.QUIET, {"npu", "igpu"}, id="quiet-no-fans"),
])
def test_modes_order_the_four_profiles(mode: EfficiencyMode, expected: set[str]) -> None:
    decision = select_backend(RouteRequest(model=MODEL), _profiles(), mode, rng=random.Random(0))
    assert decision.backend_id in expected
    assert decision.alternatives[-1] in {"cpu", "nvidia"}
    assert set(decision.alternatives) | {decision.backend_id} == {"npu", "igpu", "nvidia", "cpu"}


def test_ultra_efficiency_puts_the_hungriest_last() -> None:
    decision = select_backend(RouteRequest(model=MODEL), _profiles(), EfficiencyMode.ULTRA_EFFICIENCY,
                              rng=random.Random(0))
    assert (decision.backend_id, *decision.alternatives) == ("npu", "igpu", "cpu", "nvidia")


@pytest.mark.parametrize(("request_", "mode", "expected"), [
    pytest.param(RouteRequest(model=MODEL, latency_critical=True), EfficiencyMode.BALANCED, "nvidia",
                 id="latency-critical-goes-fast"),
    pytest.param(RouteRequest(model=MODEL, media_type="audio"), EfficiencyMode.BALANCED, "nvidia",
                 id="audio-media-is-latency-critical"),
    pytest.param(RouteRequest(model=MODEL, power_efficient=True), EfficiencyMode.BALANCED, "npu",
                 id="power-efficient-goes-frugal"),
    pytest.param(RouteRequest(model=MODEL, max_power_watts=20), EfficiencyMode.PERFORMANCE, "igpu",
                 id="power-cap-excludes-hungry"),
    pytest.param(RouteRequest(model=MODEL, max_latency_ms=1500), EfficiencyMode.EFFICIENCY, "igpu",
                 id="latency-budget-excludes-slow"),
    pytest.param(RouteRequest(model=MODEL, target="cpu"), EfficiencyMode.PERFORMANCE, "cpu",
                 id="explicit-target-wins"),
])
def test_request_constraints_change_the_choice(request_: RouteRequest, mode: EfficiencyMode,
                                               expected: str) -> None:
    assert _pick(request_, _profiles(), mode) == expected


def test_power_cap_reports_what_it_excluded() -> None:
    decision = select_backend(RouteRequest(model=MODEL, max_power_watts=20), _profiles(),
                              EfficiencyMode.PERFORMANCE, rng=random.Random(0))
    assert set(decision.excluded) == {"nvidia", "cpu"}
    assert decision.excluded["nvidia"] == "power 55 W over the 20 W budget"
    assert set(decision.alternatives) == {"npu"}


def test_model_present_on_one_backend_goes_there() -> None:
    backends = [replace(b, models=frozenset({"other"})) for b in _profiles()]
    backends = _with(backends, "cpu", models=frozenset({"other", "llama3:latest"}))
    decision = select_backend(RouteRequest(model="LLAMA3"), backends, EfficiencyMode.PERFORMANCE,
                              rng=random.Random(0))
    assert decision.backend_id == "cpu"
    assert decision.excluded["nvidia"] == "model 'llama3:latest' not available"


def test_open_breaker_and_unhealthy_are_avoided() -> None:
    backends = _with(_with(_profiles(), "nvidia", breaker=BreakerState.OPEN), "igpu", healthy=False)
    decision = select_backend(RouteRequest(model=MODEL), backends, EfficiencyMode.PERFORMANCE,
                              rng=random.Random(0))
    assert decision.backend_id == "npu"
    assert decision.excluded == {"nvidia": "circuit breaker open",
                                 "igpu": "unhealthy (failing health checks)"}


def test_half_open_breaker_is_usable_but_scored_down() -> None:
    backends = [BackendView("a"), BackendView("b", breaker=BreakerState.HALF_OPEN)]
    decision = select_backend(RouteRequest(), backends, rng=random.Random(0))
    assert decision.backend_id == "a"
    assert decision.alternatives == ("b",)


def test_residency_wins_a_tie() -> None:
    backends = [BackendView("a", models=frozenset({MODEL})),
                BackendView("b", models=frozenset({MODEL}), loaded={MODEL: 4096})]
    decision = select_backend(RouteRequest(model=MODEL), backends, rng=random.Random(0))
    assert decision.backend_id == "b"
    assert decision.reason.startswith("mode-balanced; model loaded")


@pytest.mark.parametrize(("context_tokens", "expected"), [
    pytest.param(8192, "big", id="needs-8k-only-big-fits"),
    pytest.param(2048, None, id="needs-2k-both-fit"),
    pytest.param(None, None, id="no-requirement-both-fit"),
])
def test_context_fit_beats_a_reload(context_tokens: int | None, expected: str | None) -> None:
    backends = [BackendView("small", loaded={MODEL: 4096}), BackendView("big", loaded={MODEL: 16384})]
    decision = select_backend(RouteRequest(model=MODEL, context_tokens=context_tokens), backends,
                              rng=random.Random(0))
    if expected is None:
        assert decision.reason.startswith("mode-balanced; near-tie of 2")
    else:
        assert decision.backend_id == expected
        assert decision.scores["small"].as_dict()["context_fit"] == 0.0


def test_loaded_at_a_small_context_still_beats_cold() -> None:
    backends = [BackendView("cold", models=frozenset({MODEL})), BackendView("small", loaded={MODEL: 2048})]
    assert _pick(RouteRequest(model=MODEL, context_tokens=8192), backends) == "small"


def test_busy_backend_loses_to_an_idle_twin() -> None:
    backends = [BackendView("busy", in_flight=4, queued=(0, 3, 0, 0)), BackendView("idle")]
    decision = select_backend(RouteRequest(), backends, rng=random.Random(0))
    assert decision.backend_id == "idle"
    assert decision.scores["busy"].estimated_latency_ms > decision.scores["idle"].estimated_latency_ms


def test_hot_hardware_loses_and_critical_is_spared() -> None:
    backends = _with(_profiles(), "nvidia", thermal=ThermalState(ThermalLevel.CRITICAL, 98.0, "trip point"))
    decision = select_backend(RouteRequest(model=MODEL), backends, EfficiencyMode.PERFORMANCE,
                              rng=random.Random(0))
    assert decision.backend_id == "igpu"
    assert decision.excluded == {"nvidia": "thermal critical (trip point)"}


def test_critical_hardware_still_serves_when_alone() -> None:
    only = [BackendView("a", thermal=ThermalState(ThermalLevel.CRITICAL))]
    assert _pick(RouteRequest(), only) == "a"


def test_learned_latency_replaces_the_static_guess() -> None:
    learned = {MODEL: LatencyStats(ttft_ms=2500, tokens_per_s=5.0, service_ms=9000, samples=10)}
    backends = _with(_profiles(), "nvidia", latency=learned)
    decision = select_backend(RouteRequest(model=MODEL, latency_critical=True), backends,
                              rng=random.Random(0))
    assert decision.backend_id == "igpu"
    # Not resident: the load (the default guess, nothing learned) comes on top, and the reply of
    # the default length at the learned 5 tokens/s.
    assert decision.scores["nvidia"].estimated_latency_ms == 2500 + DEFAULT_LOAD_MS + DEFAULT_REPLY_TOKENS * 200


def test_priority_setting_breaks_a_tie() -> None:
    backends = [BackendView("low", priority=1), BackendView("high", priority=100)]
    picks = {select_backend(RouteRequest(), backends, rng=random.Random(seed)).backend_id
             for seed in range(10)}
    assert picks == {"high"}


def test_near_ties_are_broken_by_the_rng() -> None:
    backends = [BackendView(f"b{i}") for i in range(4)]
    picks = {select_backend(RouteRequest(), backends, rng=random.Random(seed)).backend_id
             for seed in range(40)}
    assert picks == {"b0", "b1", "b2", "b3"}


def test_custom_weights_override_the_mode() -> None:
    power_only = Weights(power=1.0)
    decision = select_backend(RouteRequest(model=MODEL), _profiles(), EfficiencyMode.BALANCED,
                              power_only, rng=random.Random(0))
    assert decision.backend_id == "npu"


def test_decision_estimates_and_reason() -> None:
    decision = select_backend(RouteRequest(model=MODEL), _profiles(), EfficiencyMode.PERFORMANCE,
                              rng=random.Random(0))
    assert (decision.estimated_latency_ms, decision.estimated_power_w) == (120 + DEFAULT_LOAD_MS, 55)
    assert decision.reason == "mode-performance; nvidia est. 1120 ms vs igpu 1400 ms"
    assert decision.reason.isascii()


# -- lenient model lists -----------------------------------------------------------------------

def test_unreported_model_lists_are_tried_while_nobody_knows_the_model() -> None:
    backends = [BackendView("a"), BackendView("b", models=frozenset({"other"}))]
    decision = select_backend(RouteRequest(model=MODEL), backends, rng=random.Random(0))
    assert decision.backend_id == "a"
    assert decision.excluded == {"b": "model 'llama3:latest' not available"}


def test_unreported_lists_are_skipped_once_someone_has_the_model() -> None:
    backends = [BackendView("a"), BackendView("b", models=frozenset({MODEL}), avg_latency_ms=5000)]
    decision = select_backend(RouteRequest(model=MODEL), backends, rng=random.Random(0))
    assert decision.backend_id == "b"
    assert decision.excluded == {"a": "model list not reported yet"}


def test_resident_model_counts_even_if_the_list_missed_it() -> None:
    backends = [BackendView("a", models=frozenset(), loaded={MODEL: None})]
    assert _pick(RouteRequest(model=MODEL), backends) == "a"


# -- rejections --------------------------------------------------------------------------------

@pytest.mark.parametrize(("request_", "backends", "status", "reasons"), [
    pytest.param(RouteRequest(target="gpu9"), [BackendView("a"), BackendView("b")], 400,
                 {"gpu9": "not configured"}, id="unknown-target-400"),
    pytest.param(RouteRequest(target="a"), [BackendView("a", breaker=BreakerState.OPEN), BackendView("b")],
                 503, {"a": "circuit breaker open"}, id="target-unhealthy-503"),
    pytest.param(RouteRequest(model="x"), [BackendView("a", models=frozenset({"y"})),
                                           BackendView("b", models=frozenset(), enabled=False)],
                 404, {"a": "model 'x:latest' not available", "b": "disabled"}, id="model-nowhere-404"),
    pytest.param(RouteRequest(model="x", target="a"), [BackendView("a", models=frozenset({"y"})),
                                                       BackendView("b", models=frozenset({"x"}))],
                 404, {"a": "model 'x:latest' not available"}, id="model-not-on-target-404"),
    pytest.param(RouteRequest(model="x"), [BackendView("a", models=frozenset({"x"}), healthy=False),
                                           BackendView("b", models=frozenset({"y"}))],
                 503, {"a": "unhealthy (failing health checks)", "b": "model 'x:latest' not available"},
                 id="model-only-on-dead-backend-503"),
    pytest.param(RouteRequest(max_power_watts=5, max_latency_ms=100),
                 [BackendView("a", power_watts=50, avg_latency_ms=50),
                  BackendView("b", power_watts=3, avg_latency_ms=800)],
                 503, {"a": "power 50 W over the 5 W budget",
                       "b": "estimated latency 800 ms over the 100 ms budget"},
                 id="budgets-503"),
    pytest.param(RouteRequest(), [], 503, {}, id="no-backends"),
])
def test_rejections_say_which_constraint_excluded_which_backend(
        request_: RouteRequest, backends: list[BackendView], status: int, reasons: dict[str, str]) -> None:
    with pytest.raises(NoBackendAvailable) as info:
        select_backend(request_, backends, rng=random.Random(0))
    assert info.value.status == status
    assert info.value.reasons == reasons


def test_unknown_target_lists_configured_ids() -> None:
    with pytest.raises(NoBackendAvailable, match=r"configured backends: a, b"):
        select_backend(RouteRequest(target="zz"), [BackendView("a"), BackendView("b")], rng=random.Random(0))


def test_queue_ahead_counts_only_equal_or_higher_priority() -> None:
    backends = [BackendView("a", max_concurrent=1, in_flight=1, queued=(5, 0, 0, 0), avg_latency_ms=100)]
    low = select_backend(RouteRequest(priority=Priority.BEST_EFFORT), backends, rng=random.Random(0))
    high = select_backend(RouteRequest(priority=Priority.HIGH), backends, rng=random.Random(0))
    assert high.estimated_latency_ms < low.estimated_latency_ms


def test_fail_over_moves_to_the_next_alternative_and_says_why() -> None:
    decision = select_backend(RouteRequest(model=MODEL), _profiles(), EfficiencyMode.BALANCED,
                              rng=random.Random(0))
    first, second = decision.backend_id, decision.alternatives[0]
    moved = fail_over(decision, first, "unreachable", power_w=99.0)
    assert moved.backend_id == second
    assert moved.alternatives == decision.alternatives[1:]
    assert moved.estimated_latency_ms == decision.scores[second].estimated_latency_ms
    assert moved.estimated_power_w == 99.0
    assert moved.reason == f"failover; failed over from {first} (unreachable); {decision.reason}"
    last = decision
    for backend in decision.alternatives:
        last = fail_over(last, last.backend_id, "x", power_w=1.0)
        assert last.backend_id == backend
    with pytest.raises(ValueError, match="no alternative"):
        fail_over(last, last.backend_id, "x", power_w=1.0)


def test_a_view_without_a_slot_is_refused_when_built() -> None:
    """The queue wait divides by `max_concurrent`: zero slots would be a division by zero in one
    selection pass and infinity in the other."""
    with pytest.raises(ValueError, match="max_concurrent must be at least 1"):
        BackendView("gpu", max_concurrent=0)
