"""Both passes of the selection (`scalar.py` for small fleets, `vector.py`'s numpy columns for large
ones) decide exactly as the straightforward one-backend-at-a-time reading of the rules (kept here as
the oracle) on random fleets: same pick, failover order, estimates, reason, warnings, scores,
exclusions, refusals and rng consumption."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from ollama_proxy.core.admission import Priority
from ollama_proxy.core.modes import POLICIES, EfficiencyMode
from ollama_proxy.core.routing import explain
from ollama_proxy.core.routing import select as selection
from ollama_proxy.core.routing.fleet import (
    ELIGIBLE,
    NO_MODEL,
    NOT_REPORTED,
    OVER_LATENCY,
    OVER_POWER,
    POWER_CAP,
    Fleet,
)
from ollama_proxy.core.routing.latency import default_service_ms, estimate_latency_ms, expected_reply_tokens, queue_wait
from ollama_proxy.core.routing.load import Load
from ollama_proxy.core.routing.select import (
    TIE_MARGIN,
    BackendScore,
    RoutingDecision,
    _shifted,
    select,
    select_backend,
)
from ollama_proxy.core.routing.state import (
    BackendView,
    BreakerState,
    LatencyStats,
    RouteRequest,
    SampleKind,
    ThermalLevel,
    ThermalState,
)
from ollama_proxy.core.routing.weights import FACTORS, Weights, weights_for
from ollama_proxy.core.system.thermal import PENALTY
from ollama_proxy.errors import NoBackendAvailable

_QUIET = {"npu": 1.0, "igpu": 0.9, "other": 0.6, "cpu": 0.3, "nvidia": 0.1}
_HOT = {ThermalLevel.HOT, ThermalLevel.CRITICAL}
_HEALTH = {BreakerState.CLOSED: 1.0, BreakerState.HALF_OPEN: 0.3}
MODELS = ["llama3:latest", "qwen3:4b", "gemma3:1b"]


def reference_select(request: RouteRequest, backends: Sequence[BackendView], mode: EfficiencyMode,
                     weights: Weights | None, rng: random.Random, power_cap_w: float | None) -> RoutingDecision:
    """The scalar selection: filter, estimate, score, rank, spill, explain, one backend at a time."""
    if not backends:
        raise NoBackendAvailable("no backends are configured", status=503,
                                 routing_reason="unavailable; no backends are configured")
    if request.target is not None and all(b.id != request.target for b in backends):
        raise NoBackendAvailable(f"unknown X-Target-Backend {request.target!r}; configured backends: "
                                 f"{', '.join(b.id for b in backends)}", {request.target: "not configured"},
                                 status=400, routing_reason="unknown-target; configured: "
                                 + ",".join(b.id for b in backends))
    policy = POLICIES[mode]
    cap = power_cap_w if policy.power_capped else None
    model = request.model
    lenient = model is None or not any(b.has_model(model) for b in backends if b.enabled)
    eligible, estimates, waits, first_token = [], {}, {}, {}
    excluded, codes, warnings, nowhere = {}, [], [], model is not None
    for b in backends:
        if request.target is not None and b.id != request.target:
            continue
        if model is not None and b.has_model(model) is not False:
            nowhere = False
        estimate = estimate_latency_ms(b, model, request.priority, request.context_tokens, request.kind,
                                       expected_reply_tokens(request.reply_tokens, None))
        learned = b.latency if request.kind is SampleKind.GENERATION else b.embedding_latency
        stats = learned.get(model) if model is not None else None
        service = stats.service_ms if stats is not None else default_service_ms(b.avg_latency_ms)
        waits[b.id] = float(queue_wait(service, b.in_flight + sum(b.queued[request.priority:]), b.max_concurrent))
        first_token[b.id] = (stats.ttft_ms if stats is not None else b.avg_latency_ms) + waits[b.id]
        if cap is not None and request.target is not None and b.power_watts > cap:
            warnings.append(f"{b.id} draws {b.power_watts:g} W, over {mode.value}'s {cap:g} W cap; served because "
                            "X-Target-Backend asked for it")
        code, reason = _reference_exclusion(b, request, estimate, lenient, cap if request.target is None else None)
        codes.append(code)
        if reason is None:
            estimates[b.id] = estimate
            eligible.append(b)
        else:
            excluded[b.id] = reason
    critical = [b for b in eligible if b.thermal.level is ThermalLevel.CRITICAL]
    if request.target is not None and critical:
        b = critical[0]
        warnings.append(f"{b.id} is at a critical temperature ({b.thermal.reason or 'no reason given'}); "
                        "served because X-Target-Backend asked for it")
    elif critical and len(critical) < len(eligible):
        for b in critical:
            excluded[b.id] = f"thermal critical ({b.thermal.reason or 'no reason given'})"
        eligible = [b for b in eligible if b not in critical]
    if not eligible:
        raise explain.rejection(request, excluded, np.array(codes), nowhere, cap)
    w = _shifted(weights or weights_for(mode), request.wants_low_latency, request.power_efficient)
    top = max(b.priority for b in backends)
    scores = {b.id: _reference_score(b, request, first_token[b.id], estimates[b.id], w, top) for b in eligible}
    fastest = (policy.fastest or request.wants_low_latency) and not request.power_efficient
    if fastest:
        ranked = sorted(eligible, key=lambda b: (estimates[b.id], -scores[b.id].total))
        tied = [b for b in ranked if estimates[b.id] == estimates[ranked[0].id]
                and scores[ranked[0].id].total - scores[b.id].total <= TIE_MARGIN]
    else:
        ranked = sorted(eligible, key=lambda b: scores[b.id].total, reverse=True)
        tied = [b for b in ranked if scores[ranked[0].id].total - scores[b.id].total <= TIE_MARGIN]
    best = [i for i, b in enumerate(tied) if b.priority == max(t.priority for t in tied)]
    pick = best[0] if len(best) == 1 else rng.choice(best)
    by_priority = len(best) < len(tied)
    spilled = None
    if not fastest and len(ranked) > 1 and waits[ranked[pick].id] > policy.patience_ms:
        patient = [i for i, b in enumerate(ranked) if waits[b.id] <= policy.patience_ms]
        moved = patient[0] if patient else min(range(len(ranked)), key=lambda i: estimates[ranked[i].id])
        if moved != pick:
            spilled, pick = ranked[pick], moved
    chosen = ranked[pick]
    if request.target is not None:
        reason = f"target; X-Target-Backend {chosen.id}"
    elif len(ranked) == 1:
        reason = f"only-candidate; {explain.mode_token(mode)}"
    elif spilled is not None:
        reason = (f"spill-over; {explain.mode_token(mode)}: {spilled.id} queue wait {waits[spilled.id]:.0f} ms "
                  f"over the {policy.patience_ms:.0f} ms patience")
    elif fastest:
        others = [chosen, *(b for b in ranked if b is not chosen)][:2]
        reason = f"{explain.fastest_token(request, mode)}; " + explain.fastest_detail(
            [b.id for b in others], [estimates[b.id] for b in others], len(tied), by_priority)
    else:
        if len(tied) > 1:
            detail = explain.tie_detail(len(tied), by_priority)
        else:
            detail = explain.gains_detail(w.vector, scores[chosen.id].factors, scores[ranked[1].id].factors,
                                          len(ranked))
        if request.power_efficient:
            detail = explain.mode_token(mode) + ("+latency-critical" if request.wants_low_latency else "") \
                + f": {detail}"
        reason = f"{explain.weighted_token(request, mode)}; {detail}"
    return RoutingDecision(chosen.id, tuple(b.id for b in ranked if b is not chosen), estimates[chosen.id],
                           chosen.power_watts, explain.with_excluded(reason, len(excluded)), mode, scores,
                           excluded, tuple(warnings))


def _reference_exclusion(b: BackendView, request: RouteRequest, estimate_ms: float, lenient: bool,
                         cap: float | None) -> tuple[int, str | None]:
    if not b.enabled:
        return -1, "disabled"
    if not b.healthy:
        return -1, "unhealthy (failing health checks)"
    if b.breaker is BreakerState.OPEN:
        return -1, "circuit breaker open"
    if request.model is not None:
        has = b.has_model(request.model)
        if has is False:
            return NO_MODEL, f"model {request.model!r} not available"
        if has is None and not lenient:
            return NOT_REPORTED, "model list not reported yet"
    if cap is not None and b.power_watts > cap:
        return POWER_CAP, (f"power {b.power_watts:g} W over ultra-efficiency's {cap:g} W cap "
                           "(router.ultra_efficiency_max_watts)")
    if request.max_power_watts is not None and b.power_watts > request.max_power_watts:
        return OVER_POWER, f"power {b.power_watts:g} W over the {request.max_power_watts:g} W budget"
    if request.max_latency_ms is not None and estimate_ms > request.max_latency_ms:
        return OVER_LATENCY, (f"estimated latency {estimate_ms:.0f} ms over the {request.max_latency_ms:.0f} ms "
                              "budget")
    return ELIGIBLE, None


def _reference_score(b: BackendView, request: RouteRequest, first_token_ms: float, estimate_ms: float, w: Weights,
                     top_priority: int) -> BackendScore:
    model = request.model
    if model is None:
        resident = fits = 1.0
    else:
        resident = 1.0 if model in b.loaded else 0.0
        fits = 1.0 if b.fits(model, request.context_tokens) else 0.0
    level = b.thermal.level
    lat, power = first_token_ms / w.latency_ref_ms, b.power_watts / w.power_ref_w
    factors = (1.0 / (1.0 + lat * lat), 1.0 / (1.0 + power * power),
               1.0 / (1.0 + (b.in_flight + b.queued_total) / b.max_concurrent), 1.0 - PENALTY[level],
               _QUIET.get(b.hardware, _QUIET["other"]) * (0.5 if level in _HOT else 1.0),
               b.priority / top_priority if top_priority else 1.0, resident, fits, _HEALTH.get(b.breaker, 0.0))
    total = 0.0
    for weight, factor in zip(w.vector, factors, strict=True):
        total += weight * factor  # left to right: `sum` over floats compensates since Python 3.12
    return BackendScore(total / w.total, estimate_ms, factors)


def _random_view(rng: random.Random, i: int) -> BackendView:
    models = None if rng.random() < 0.15 else frozenset(rng.sample(MODELS, rng.randrange(0, 4)))
    loaded = {m: rng.choice([None, 2048, 4096, 8192, 32768]) for m in rng.sample(MODELS, rng.randrange(0, 3))}
    latency, embedding = ({m: LatencyStats(rng.uniform(20, 3000), rng.choice([None, rng.uniform(5, 120)]),
                                           rng.uniform(100, 20000), 3)
                          for m in rng.sample(MODELS, rng.randrange(0, 3))} for _ in range(2))
    level = rng.choice([*ThermalLevel, ThermalLevel.COOL, ThermalLevel.COOL])
    return BackendView(
        f"b{i}", hardware=rng.choice([*_QUIET, "tpu"]), enabled=rng.random() > 0.1,
        power_watts=rng.choice([3, 12, 28, 55, rng.uniform(1, 300)]),
        avg_latency_ms=rng.choice([120, 400, 800, 1500, rng.uniform(10, 5000)]),
        priority=rng.choice([1, 1, 50, 100, 200]), max_concurrent=rng.randint(1, 8), healthy=rng.random() > 0.1,
        breaker=rng.choice([BreakerState.CLOSED] * 4 + [BreakerState.OPEN, BreakerState.HALF_OPEN]),
        models=models, loaded=loaded, in_flight=rng.randrange(0, 6),
        queued=rng.choice([(0, 0, 0, 0)] * 3 + [tuple(rng.randrange(0, 4) for _ in range(4))]),
        latency=latency, embedding_latency=embedding, thermal=ThermalState(level, None, rng.choice(["", "trip point"])),
    )


def _random_fleet(rng: random.Random) -> list[BackendView]:
    views = [_random_view(rng, i) for i in range(rng.randint(0, 12))]
    # Identical twins make exact ties, where the rng and the stable order decide.
    for twin in rng.sample(views, min(len(views), rng.randrange(0, 3))):
        views.append(BackendView(**{**{f: getattr(twin, f) for f in BackendView.__slots__}, "id": f"{twin.id}t"}))
    rng.shuffle(views)
    return views


def _random_request(rng: random.Random, views: list[BackendView]) -> RouteRequest:
    target = None
    if views and rng.random() < 0.15:
        target = rng.choice([v.id for v in views] + ["nowhere"])
    return RouteRequest(
        model=rng.choice([None, *MODELS, "missing"]), context_tokens=rng.choice([None, 2048, 8192]),
        kind=rng.choice(list(SampleKind)), reply_tokens=rng.choice([None, 0, 64, 2000]),
        target=target, latency_critical=rng.random() < 0.2, power_efficient=rng.random() < 0.2,
        max_latency_ms=rng.choice([None, None, rng.uniform(100, 5000)]),
        max_power_watts=rng.choice([None, None, rng.uniform(5, 100)]), priority=rng.choice(list(Priority)),
        media_type=rng.choice([None, "text", "audio"]))


def _outcome(decide: Callable[..., RoutingDecision], *args: object, **kwargs: object) -> tuple[object, ...]:
    try:
        d = decide(*args, **kwargs)
    except NoBackendAvailable as exc:
        return ("refused", exc.status, str(exc), dict(exc.reasons), exc.routing_reason)
    return (d.backend_id, d.alternatives, d.estimated_latency_ms, d.estimated_power_w, d.reason, d.mode,
            dict(d.scores), dict(d.excluded), len(d.scores), len(d.excluded), d.warnings)


@pytest.fixture(params=["scalar", "vector"])
def selection_pass(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every fleet screened by one pass: the random fleets (0-14 backends) straddle the crossover."""
    monkeypatch.setattr(selection, "SCALAR_UP_TO", 1_000 if request.param == "scalar" else 0)
    return str(request.param)


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed-{s}") for s in range(12)])
def test_fast_selection_decides_as_the_reference(seed: int, selection_pass: str) -> None:
    rng = random.Random(seed)
    for _ in range(100):
        views = _random_fleet(rng)
        request = _random_request(rng, views)
        mode = rng.choice(list(EfficiencyMode))
        weights = rng.choice([None, None, Weights(power=1.0), Weights(latency=1, load=1, residency=2)])
        cap = rng.choice([None, 10.0, 60.0])
        tie_seed = rng.random()
        fast_rng, reference_rng = random.Random(tie_seed), random.Random(tie_seed)
        fast = _outcome(select_backend, request, views, mode, weights, rng=fast_rng, power_cap_w=cap)
        reference = _outcome(reference_select, request, views, mode, weights, reference_rng, cap)
        assert fast == reference, (request, views)
        assert fast_rng.random() == reference_rng.random()


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed-{s}") for s in range(6)])
def test_a_kept_fleet_decides_as_the_reference_request_after_request(seed: int, selection_pass: str) -> None:
    """As the router keeps its `Fleet` between requests: the columns, totals and ranking it keeps
    from one decision must never leak into a different one (requests repeat, so they are reused)."""
    rng = random.Random(seed)
    for _ in range(20):
        views = _random_fleet(rng)
        fleet, load = Fleet(views), Load.of(views)
        asked = [_random_request(rng, views) for _ in range(3)]
        for _ in range(15):
            request = rng.choice(asked)
            mode = rng.choice(list(EfficiencyMode))
            weights = rng.choice([None, Weights(power=1.0)])
            cap = rng.choice([None, 10.0])
            tie_seed = rng.random()
            fast_rng, reference_rng = random.Random(tie_seed), random.Random(tie_seed)
            fast = _outcome(select, request, fleet, load, mode, weights, rng=fast_rng, power_cap_w=cap)
            reference = _outcome(reference_select, request, views, mode, weights, reference_rng, cap)
            assert fast == reference, (request, views)
            assert fast_rng.random() == reference_rng.random()


def test_the_random_fleets_cover_every_path() -> None:
    """Guards the equivalence test against fleets too tame to exercise the branches."""
    rng = random.Random(0)
    seen: set[str] = set()
    for _ in range(1500):
        views = _random_fleet(rng)
        request = _random_request(rng, views)
        mode = rng.choice(list(EfficiencyMode))
        outcome = _outcome(reference_select, request, views, mode, None, rng, 10.0)
        if outcome[0] == "refused":
            seen.add(f"refused {outcome[1]}")
            seen.add(str(outcome[4]).split(";")[0])
            continue
        reason = str(outcome[4])
        seen.add(reason.split(";")[0].removeprefix("mode-"))
        seen |= {k for k in ("near-tie", "tie of", "higher priority", "random pick", "best of") if k in reason}
        seen |= {text.split(" ")[0] for text in outcome[7].values()}  # type: ignore[union-attr]
        seen |= {"warning"} if outcome[10] else set()
    assert seen >= {"refused 400", "refused 404", "refused 503", "unknown-target", "no-model", "target-unavailable",
                    "power-cap", "max-power", "max-latency", "unavailable", "target", "only-candidate",
                    "latency-critical", "power-efficient", "performance", "balanced", "efficiency", "spill-over",
                    "near-tie", "tie of", "higher priority", "random pick", "best of", "warning", "disabled",
                    "unhealthy", "circuit", "model", "power", "estimated", "thermal"}


@pytest.mark.parametrize("seed", range(4))
def test_the_gains_detail_names_the_two_largest_gains_as_a_reverse_sort_would(seed: int) -> None:
    """The one-pass top two against its definition, on gains full of ties, zeros and losses."""
    rng = random.Random(seed)
    for _ in range(500):
        weights = [rng.choice([0.0, 1.0, 2.0]) for _ in FACTORS]
        mine = [rng.choice([0.0, 0.5, 1.0, rng.random()]) for _ in FACTORS]
        theirs = [rng.choice([0.0, 0.5, 1.0, rng.random()]) for _ in FACTORS]
        gains = [wk * (a - b) for wk, a, b in zip(weights, mine, theirs, strict=True)]
        top = sorted(zip(gains, FACTORS, strict=True), reverse=True)[:2]
        expected = (", ".join(explain.WHY[k] for gain, k in top if gain > 0) or "best overall") + " (best of 3)"
        assert explain.gains_detail(weights, mine, theirs, 3) == expected, gains
