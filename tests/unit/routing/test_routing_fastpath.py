"""The vectorised selection decides exactly as the straightforward one-backend-at-a-time reading of
the formula (the pre-vectorisation `select_backend`, kept here as the oracle) on random fleets:
same pick, failover order, estimates, reason, scores, exclusions and rng consumption."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from operator import mul

import pytest

from ollama_proxy.core.admission import Priority
from ollama_proxy.core.modes import EfficiencyMode
from ollama_proxy.core.routing.latency import estimate_latency_ms
from ollama_proxy.core.routing.select import (
    _WHY,
    TIE_MARGIN,
    BackendScore,
    RoutingDecision,
    _rejection,
    _shifted,
    select_backend,
)
from ollama_proxy.core.routing.state import (
    BackendView,
    BreakerState,
    LatencyStats,
    RouteRequest,
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
                     weights: Weights | None, rng: random.Random) -> RoutingDecision:
    """The scalar selection, as it was before the columns (filter, score, rank, explain)."""
    if not backends:
        raise NoBackendAvailable("no backends are configured", status=503)
    if request.target is not None and all(b.id != request.target for b in backends):
        raise NoBackendAvailable(f"unknown X-Target-Backend {request.target!r}; configured backends: "
                                 f"{', '.join(b.id for b in backends)}", {request.target: "not configured"},
                                 status=400)
    model = request.model
    lenient = model is None or not any(b.has_model(model) for b in backends if b.enabled)
    eligible, estimates, excluded, nowhere = [], {}, {}, model is not None
    for b in backends:
        if request.target is not None and b.id != request.target:
            continue
        if model is not None and b.has_model(model) is not False:
            nowhere = False
        estimate = estimate_latency_ms(b, model, request.priority)
        reason = _reference_exclusion(b, request, estimate, lenient)
        if reason is None:
            estimates[b.id] = estimate
            eligible.append(b)
        else:
            excluded[b.id] = reason
    cool = [b for b in eligible if b.thermal.level is not ThermalLevel.CRITICAL]
    if cool and len(cool) < len(eligible):
        for b in eligible:
            if b.thermal.level is ThermalLevel.CRITICAL:
                excluded[b.id] = f"thermal critical ({b.thermal.reason or 'no reason given'})"
        eligible = cool
    if not eligible:
        raise _rejection(request, excluded, nowhere)
    w = _shifted(weights or weights_for(mode), request.wants_low_latency, request.power_efficient)
    scores = {b.id: _reference_score(b, request, estimates[b.id], w) for b in eligible}
    ranked = sorted(eligible, key=lambda b: scores[b.id].total, reverse=True)
    best = scores[ranked[0].id].total
    tied = [b for b in ranked if best - scores[b.id].total <= TIE_MARGIN]
    chosen = rng.choice(tied) if len(tied) > 1 else ranked[0]
    label = mode.value + ("+latency-critical" if request.wants_low_latency else "") + (
        "+power-efficient" if request.power_efficient else "")
    if request.target is not None:
        why = "X-Target-Backend"
    elif len(ranked) == 1:
        why = "only eligible backend"
    elif len(tied) > 1:
        why = f"near-tie of {len(tied)}, random pick"
    else:
        gains = sorted(((wk * (a - b), k) for wk, a, b, k in zip(
            w.vector, scores[chosen.id].factors, scores[ranked[1].id].factors, FACTORS, strict=True)), reverse=True)
        why = (", ".join(_WHY[k] for gain, k in gains[:2] if gain > 0) or "best overall") + f" (best of {len(ranked)})"
    if excluded:
        why += f"; {len(excluded)} excluded"
    return RoutingDecision(chosen.id, tuple(b.id for b in ranked if b is not chosen), estimates[chosen.id],
                           chosen.power_watts, f"{label}: {why}", mode, scores, excluded)


def _reference_exclusion(b: BackendView, request: RouteRequest, estimate_ms: float, lenient: bool) -> str | None:
    if not b.enabled:
        return "disabled"
    if not b.healthy:
        return "unhealthy (failing health checks)"
    if b.breaker is BreakerState.OPEN:
        return "circuit breaker open"
    if request.model is not None:
        has = b.has_model(request.model)
        if has is False:
            return f"model {request.model!r} not available"
        if has is None and not lenient:
            return "model list not reported yet"
    if request.max_power_watts is not None and b.power_watts > request.max_power_watts:
        return f"power {b.power_watts:g} W over the {request.max_power_watts:g} W budget"
    if request.max_latency_ms is not None and estimate_ms > request.max_latency_ms:
        return f"estimated latency {estimate_ms:.0f} ms over the {request.max_latency_ms:.0f} ms budget"
    return None


def _reference_score(b: BackendView, request: RouteRequest, latency_ms: float, w: Weights) -> BackendScore:
    model = request.model
    if model is None:
        resident = fits = 1.0
    elif model in b.loaded:
        ctx = b.loaded[model]
        resident = 1.0
        fits = 1.0 if ctx is None or request.context_tokens is None or ctx >= request.context_tokens else 0.0
    else:
        resident = fits = 0.0
    level = b.thermal.level
    lat, power = latency_ms / w.latency_ref_ms, b.power_watts / w.power_ref_w
    factors = (1.0 / (1.0 + lat * lat), 1.0 / (1.0 + power * power),
               1.0 / (1.0 + (b.in_flight + b.queued_total) / b.max_concurrent), 1.0 - PENALTY[level],
               _QUIET.get(b.hardware, _QUIET["other"]) * (0.5 if level in _HOT else 1.0),
               min(b.priority, 100) / 100, resident, fits, _HEALTH.get(b.breaker, 0.0))
    return BackendScore(sum(map(mul, w.vector, factors)) / w.total, latency_ms, factors)


def _random_view(rng: random.Random, i: int) -> BackendView:
    models = None if rng.random() < 0.15 else frozenset(rng.sample(MODELS, rng.randrange(0, 4)))
    loaded = {m: rng.choice([None, 2048, 4096, 8192, 32768]) for m in rng.sample(MODELS, rng.randrange(0, 3))}
    latency = {m: LatencyStats(rng.uniform(20, 3000), None, rng.uniform(100, 20000), 3)
               for m in rng.sample(MODELS, rng.randrange(0, 3))}
    level = rng.choice([*ThermalLevel, ThermalLevel.COOL, ThermalLevel.COOL])
    return BackendView(
        f"b{i}", hardware=rng.choice([*_QUIET, "tpu"]), enabled=rng.random() > 0.1,
        power_watts=rng.choice([3, 12, 28, 55, rng.uniform(1, 300)]),
        avg_latency_ms=rng.choice([120, 400, 800, 1500, rng.uniform(10, 5000)]),
        priority=rng.choice([1, 1, 50, 100, 200]), max_concurrent=rng.randint(1, 8), healthy=rng.random() > 0.1,
        breaker=rng.choice([BreakerState.CLOSED] * 4 + [BreakerState.OPEN, BreakerState.HALF_OPEN]),
        models=models, loaded=loaded, in_flight=rng.randrange(0, 6),
        queued=rng.choice([(0, 0, 0, 0)] * 3 + [tuple(rng.randrange(0, 4) for _ in range(4))]),
        latency=latency, thermal=ThermalState(level, None, rng.choice(["", "trip point"])),
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
        target=target, latency_critical=rng.random() < 0.2, power_efficient=rng.random() < 0.2,
        max_latency_ms=rng.choice([None, None, rng.uniform(100, 5000)]),
        max_power_watts=rng.choice([None, None, rng.uniform(5, 100)]), priority=rng.choice(list(Priority)),
        media_type=rng.choice([None, "text", "audio"]))


def _outcome(decide: Callable[..., RoutingDecision], *args: object, **kwargs: object) -> tuple[object, ...]:
    try:
        d = decide(*args, **kwargs)
    except NoBackendAvailable as exc:
        return ("refused", exc.status, str(exc), dict(exc.reasons))
    return (d.backend_id, d.alternatives, d.estimated_latency_ms, d.estimated_power_w, d.reason, d.mode,
            dict(d.scores), dict(d.excluded), len(d.scores), len(d.excluded))


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed-{s}") for s in range(12)])
def test_fast_selection_decides_as_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(100):
        views = _random_fleet(rng)
        request = _random_request(rng, views)
        mode = rng.choice(list(EfficiencyMode))
        weights = rng.choice([None, None, Weights(power=1.0), Weights(latency=1, load=1, residency=2)])
        tie_seed = rng.random()
        fast_rng, reference_rng = random.Random(tie_seed), random.Random(tie_seed)
        fast = _outcome(select_backend, request, views, mode, weights, rng=fast_rng)
        reference = _outcome(reference_select, request, views, mode, weights, reference_rng)
        assert fast == reference, (request, views)
        assert fast_rng.random() == reference_rng.random()


def test_the_random_fleets_cover_every_path() -> None:
    """Guards the equivalence test against fleets too tame to exercise the branches."""
    rng = random.Random(0)
    seen: set[str] = set()
    for _ in range(1000):
        views = _random_fleet(rng)
        request = _random_request(rng, views)
        outcome = _outcome(reference_select, request, views, EfficiencyMode.BALANCED, None, rng)
        if outcome[0] == "refused":
            seen.add(f"refused {outcome[1]}")
            continue
        reason = str(outcome[4])
        seen |= {k for k in ("near-tie", "only eligible", "X-Target-Backend", "best of") if k in reason}
        seen |= {text.split(" ")[0] for text in outcome[7].values()}  # type: ignore[union-attr]
    assert seen >= {"refused 400", "refused 404", "refused 503", "near-tie", "only eligible", "X-Target-Backend",
                    "best of", "disabled", "unhealthy", "circuit", "model", "power", "estimated", "thermal"}
