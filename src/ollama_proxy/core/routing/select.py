"""Backend selection: filter the backends that may serve a request, score the rest, explain the pick.

`select_backend` is a pure function of the request, a snapshot of every backend (`BackendView`),
the efficiency mode and a random generator used only to break near-ties. It returns a
`RoutingDecision` (the pick, the failover order, estimates, a one-line reason and every score) or
raises `NoBackendAvailable` whose `reasons` say which constraint excluded which backend and whose
`status` is the HTTP answer: 400 unknown target, 404 model nowhere, 503 otherwise.

It does not know how views are built, how requests are sent or retried, or what time it is: state
that changes with time (breaker half-open, learned latency) is resolved when the view is built.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from operator import mul
from types import MappingProxyType

from ollama_proxy.core.modes import EfficiencyMode
from ollama_proxy.core.routing.latency import estimate_latency_ms
from ollama_proxy.core.routing.state import BackendView, BreakerState, RouteRequest, ThermalLevel
from ollama_proxy.core.routing.weights import FACTORS, Weights, weights_for
from ollama_proxy.core.thermal import PENALTY as THERMAL_PENALTY
from ollama_proxy.errors import NoBackendAvailable

# Scores within this distance of the best count as a tie and are picked at random, which also
# spreads load over identical backends.
TIE_MARGIN = 0.01

# How quiet the hardware is under load: discrete GPUs and CPUs spin fans up, NPUs and iGPUs do not.
_QUIET = {"npu": 1.0, "igpu": 0.9, "other": 0.6, "cpu": 0.3, "nvidia": 0.1}
_HOT = frozenset({ThermalLevel.HOT, ThermalLevel.CRITICAL})
_HEALTH = {BreakerState.CLOSED: 1.0, BreakerState.HALF_OPEN: 0.3}
# Words for the reason header, one per `Weights` factor.
_WHY = {"latency": "faster", "power": "lower power", "load": "less busy", "thermal": "cooler",
        "noise": "quieter", "priority": "higher priority", "residency": "model loaded",
        "context_fit": "loaded context fits", "health": "breaker closed"}


@dataclass(frozen=True, slots=True)
class BackendScore:
    """A weighted mean in [0, 1]; `factors` line up with `FACTORS` (see `as_dict`)."""

    total: float
    estimated_latency_ms: float
    factors: tuple[float, ...]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(FACTORS, self.factors, strict=True))


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """The chosen backend, the order to fail over in, and why."""

    backend_id: str
    alternatives: tuple[str, ...]
    estimated_latency_ms: float
    estimated_power_w: float
    reason: str
    mode: EfficiencyMode
    scores: Mapping[str, BackendScore]
    excluded: Mapping[str, str]


def select_backend(request: RouteRequest, backends: Sequence[BackendView],
                   mode: EfficiencyMode = EfficiencyMode.BALANCED, weights: Weights | None = None, *,
                   rng: random.Random, tie_margin: float = TIE_MARGIN) -> RoutingDecision:
    """Pick a backend for `request`; `weights` overrides the mode's table (headers still shift it)."""
    if not backends:
        raise NoBackendAvailable("no backends are configured", status=503)
    if request.target is not None and all(b.id != request.target for b in backends):
        configured = ", ".join(b.id for b in backends)
        raise NoBackendAvailable(f"unknown X-Target-Backend {request.target!r}; configured backends: "
                                 f"{configured}", {request.target: "not configured"}, status=400)

    eligible, estimates, excluded, model_nowhere = _filter(request, backends)
    if not eligible:
        raise _rejection(request, excluded, model_nowhere)

    w = _shifted(weights or weights_for(mode), request.wants_low_latency, request.power_efficient)
    scores = {b.id: _score(b, request, estimates[b.id], w) for b in eligible}
    ranked = sorted(eligible, key=lambda b: scores[b.id].total, reverse=True)
    best = scores[ranked[0].id].total
    tied = [b for b in ranked if best - scores[b.id].total <= tie_margin]
    chosen = rng.choice(tied) if len(tied) > 1 else ranked[0]
    rest = tuple(b.id for b in ranked if b is not chosen)
    return RoutingDecision(
        backend_id=chosen.id,
        alternatives=rest,
        estimated_latency_ms=estimates[chosen.id],
        estimated_power_w=chosen.power_watts,
        reason=_reason(request, mode, chosen, ranked, scores, w, len(tied), len(excluded)),
        mode=mode,
        scores=MappingProxyType(scores),
        excluded=MappingProxyType(excluded),
    )


def fail_over(decision: RoutingDecision, failed: str, why: str, *, power_w: float) -> RoutingDecision:
    """The decision after `failed` could not serve: the next alternative, explained as such."""
    if not decision.alternatives:
        raise ValueError(f"no alternative left after {failed!r}")
    chosen, *rest = decision.alternatives
    score = decision.scores.get(chosen)
    return replace(decision, backend_id=chosen, alternatives=tuple(rest),
                   estimated_latency_ms=score.estimated_latency_ms if score else decision.estimated_latency_ms,
                   estimated_power_w=power_w, reason=f"{decision.reason}; failed over from {failed} ({why})")


@lru_cache(maxsize=64)
def _shifted(weights: Weights, latency_critical: bool, power_efficient: bool) -> Weights:
    # Few distinct combinations exist; caching keeps validation and the weight vector off the hot path.
    return weights.shifted(latency_critical=latency_critical, power_efficient=power_efficient)


def _filter(request: RouteRequest, backends: Sequence[BackendView]
            ) -> tuple[list[BackendView], dict[str, float], dict[str, str], bool]:
    """Eligible backends, their latency estimates, exclusion reasons, and whether every considered
    backend has reported a model list without the model (then the answer is 404, not 503)."""
    model = request.model
    # Be lenient with backends that have not reported their models only while no backend is known
    # to have the model: at start-up every list is empty, and refusing then would be wrong.
    lenient = model is None or not any(b.has_model(model) for b in backends if b.enabled)
    eligible: list[BackendView] = []
    estimates: dict[str, float] = {}
    excluded: dict[str, str] = {}
    model_nowhere = model is not None
    for b in backends:
        if request.target is not None and b.id != request.target:
            continue
        if model is not None and b.has_model(model) is not False:
            model_nowhere = False
        estimate = estimate_latency_ms(b, model, request.priority)
        reason = _exclusion(b, request, estimate, lenient)
        if reason is None:
            estimates[b.id] = estimate
            eligible.append(b)
        else:
            excluded[b.id] = reason
    # Hardware at a critical temperature is spared whenever anything else can serve; when nothing
    # else can, a slow answer beats a refusal, and the thermal factor still scores it lowest.
    cool = [b for b in eligible if b.thermal.level is not ThermalLevel.CRITICAL]
    if cool and len(cool) < len(eligible):
        for b in eligible:
            if b.thermal.level is ThermalLevel.CRITICAL:
                excluded[b.id] = f"thermal critical ({b.thermal.reason or 'no reason given'})"
        eligible = cool
    return eligible, estimates, excluded, model_nowhere


def _exclusion(b: BackendView, request: RouteRequest, estimate_ms: float, lenient: bool) -> str | None:
    """Why `b` cannot take the request, or None. Checks run cheapest and most fundamental first."""
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


def _rejection(request: RouteRequest, excluded: dict[str, str], model_nowhere: bool) -> NoBackendAvailable:
    detail = "; ".join(f"{bid}: {why}" for bid, why in excluded.items())
    if model_nowhere:
        where = f"backend {request.target!r}" if request.target else "any backend"
        return NoBackendAvailable(f"model {request.model!r} not found on {where} ({detail})",
                                  excluded, status=404)
    if request.target is not None:
        return NoBackendAvailable(f"X-Target-Backend {request.target!r} cannot take the request: {detail}",
                                  excluded, status=503)
    return NoBackendAvailable(f"no backend satisfies the request: {detail}", excluded, status=503)


def _score(b: BackendView, request: RouteRequest, latency_ms: float, w: Weights) -> BackendScore:
    model = request.model
    if model is None:
        resident = fits = 1.0
    elif model in b.loaded:
        ctx = b.loaded[model]
        resident = 1.0
        # Ollama reloads a runner whose num_ctx differs (reference 4.5): only a large enough one is warm.
        fits = 1.0 if ctx is None or request.context_tokens is None or ctx >= request.context_tokens else 0.0
    else:
        resident = fits = 0.0
    level = b.thermal.level
    lat = latency_ms / w.latency_ref_ms
    power = b.power_watts / w.power_ref_w
    factors = (
        # 1 at zero, 0.5 at the reference, flat near zero so small differences matter little.
        1.0 / (1.0 + lat * lat),
        1.0 / (1.0 + power * power),
        1.0 / (1.0 + (b.in_flight + b.queued_total) / b.max_concurrent),
        1.0 - THERMAL_PENALTY[level],
        _QUIET.get(b.hardware, _QUIET["other"]) * (0.5 if level in _HOT else 1.0),
        min(b.priority, 100) / 100,
        resident,
        fits,
        _HEALTH.get(b.breaker, 0.0),
    )
    total = sum(map(mul, w.vector, factors)) / w.total
    return BackendScore(total, latency_ms, factors)


def _reason(request: RouteRequest, mode: EfficiencyMode, chosen: BackendView, ranked: list[BackendView],
            scores: dict[str, BackendScore], w: Weights, tied: int, excluded: int) -> str:
    """One short ASCII line for X-Routing-Reason: mode, what set the pick apart, how many competed."""
    label = mode.value
    if request.wants_low_latency:
        label += "+latency-critical"
    if request.power_efficient:
        label += "+power-efficient"
    if request.target is not None:
        why = "X-Target-Backend"
    elif len(ranked) == 1:
        why = "only eligible backend"
    elif tied > 1:
        why = f"near-tie of {tied}, random pick"
    else:
        # No tie, so the chosen one is ranked first.
        runner_up = scores[ranked[1].id].factors
        mine = scores[chosen.id].factors
        gains = sorted(((wk * (a - b), k) for wk, a, b, k in zip(w.vector, mine, runner_up, FACTORS,
                                                                   strict=True)), reverse=True)
        why = ", ".join(_WHY[k] for gain, k in gains[:2] if gain > 0) or "best overall"
        why += f" (best of {len(ranked)})"
    if excluded:
        why += f"; {excluded} excluded"
    return f"{label}: {why}"
