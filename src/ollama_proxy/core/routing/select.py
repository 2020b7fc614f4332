"""Backend selection: filter the backends that may serve a request, estimate and score the rest, pick.

`select` is a pure function of the request, the backends' slow-changing facts as columns
(`fleet.Fleet`), their current load (`load.Load`), the efficiency mode and a random generator
used only between truly equal candidates; `select_backend` does the same from a list of
`BackendView`s. Both return a `RoutingDecision` (the pick, the failover order, estimates, the
reason and every score) or raise `NoBackendAvailable` whose `reasons` say which constraint
excluded which backend, whose `routing_reason` is the refusal's token and whose `status` is the
HTTP answer: 400 unknown target, 404 model nowhere, 503 otherwise.

One estimate per candidate of the time until the request is answered: the queue wait (requests
ahead of it over the backend's slots, at the learned slot hold time), the load time where the
model is not resident at a context that fits, the time to first token and, for a generation, the
expected reply at the learned speed (`latency.py`), each learned per kind of work. `X-Max-Latency-Ms`
filters on it; `X-Latency-Critical` and performance mode pick its smallest value (scores order
only equal estimates); the other modes rank by their weighted score, whose latency factor counts
the queue wait, and spill over to the next by score once the preferred backend's wait passes the
mode's patience (`core.modes.POLICIES`). Ultra-efficiency excludes backends over its power cap.
Between candidates equal by those rules, the higher configured priority wins, then chance.

Screening and scoring run one backend at a time in plain Python for a fleet of up to
`SCALAR_UP_TO` backends (`scalar.py`) and as numpy arrays over every backend at once above that
(`vector.py`): numpy costs a microsecond or more per call whatever the size, plain Python a little
per backend. Both hand this module a `ranking.Ranking`; the rules after it (priority, chance,
spill-over, the reason) are written once, here. It does not know how views are built, how requests
are sent or retried, or what time it is: state that changes with time (breaker half-open, learned
latency) is resolved when the views are built.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from ollama_proxy.core.modes import POLICIES, EfficiencyMode
from ollama_proxy.core.routing import explain, scalar, vector
from ollama_proxy.core.routing.fleet import Fleet
from ollama_proxy.core.routing.load import Load
from ollama_proxy.core.routing.ranking import BackendScore, Ranking
from ollama_proxy.core.routing.state import BackendView, RouteRequest
from ollama_proxy.core.routing.weights import Weights, weights_for
from ollama_proxy.errors import NoBackendAvailable

__all__ = ["TIE_MARGIN", "BackendScore", "RoutingDecision", "fail_over", "select", "select_backend"]

# Scores within this distance of the best count as a tie (weighted modes), decided by priority and
# then at random, which also spreads load over identical backends.
TIE_MARGIN = 0.01
# The largest fleet screened one backend at a time: measured with bench/decision_cost.py's route parts, the
# plain-Python pass is faster up to about a dozen backends (2: 27 vs 51 us, 8: 37 vs 52, 16: 60 vs 48).
SCALAR_UP_TO = 12


# Plain, not frozen: built on every request, and a frozen dataclass costs four times as much to build.
@dataclass(slots=True)
class RoutingDecision:
    """The chosen backend, the order to fail over in, and why (`warnings`: a rule the pick breaks
    because the client asked for it, e.g. an explicit target at a critical temperature)."""

    backend_id: str
    alternatives: tuple[str, ...]
    estimated_latency_ms: float
    estimated_power_w: float
    reason: str
    mode: EfficiencyMode
    scores: Mapping[str, BackendScore]
    excluded: Mapping[str, str]
    warnings: tuple[str, ...] = ()


def select_backend(request: RouteRequest, backends: Sequence[BackendView],
                   mode: EfficiencyMode = EfficiencyMode.BALANCED, weights: Weights | None = None, *,
                   rng: random.Random, tie_margin: float = TIE_MARGIN,
                   power_cap_w: float | None = None) -> RoutingDecision:
    """Pick a backend for `request` from one snapshot of each backend (columns built per call)."""
    return select(request, Fleet(backends), Load.of(backends), mode, weights, rng=rng, tie_margin=tie_margin,
                  power_cap_w=power_cap_w)


def select(request: RouteRequest, fleet: Fleet, load: Load, mode: EfficiencyMode = EfficiencyMode.BALANCED,
           weights: Weights | None = None, *, rng: random.Random, tie_margin: float = TIE_MARGIN,
           power_cap_w: float | None = None) -> RoutingDecision:
    """Pick a backend for `request`; `weights` overrides the mode's table (headers still shift it);
    `power_cap_w` is ultra-efficiency's cap (other modes ignore it)."""
    if not len(fleet):
        raise NoBackendAvailable("no backends are configured", status=503,
                                 routing_reason="unavailable; no backends are configured")
    target = None
    if request.target is not None:
        target = fleet.index.get(request.target)
        if target is None:
            raise NoBackendAvailable(f"unknown X-Target-Backend {request.target!r}; configured backends: "
                                     f"{', '.join(fleet.ids)}", {request.target: "not configured"}, status=400,
                                     routing_reason="unknown-target; configured: " + ",".join(fleet.ids))
    policy = POLICIES[mode]
    cap = power_cap_w if policy.power_capped else None
    w = _shifted(weights or weights_for(mode), request.wants_low_latency, request.power_efficient)
    fastest = (policy.fastest or request.wants_low_latency) and not request.power_efficient
    rank = scalar.rank if len(fleet) <= SCALAR_UP_TO else vector.rank
    ranking = rank(request, fleet, load, target, cap, mode, w, fastest, tie_margin)
    ranked, tied = ranking.ranked, ranking.tied
    pick, by_priority = 0, False
    if tied > 1 and fleet.one_priority:
        pick = rng.choice(range(tied))
    elif tied > 1:
        levels = [fleet.views[r].priority for r in ranked[:tied]]
        top = max(levels)
        best = [i for i, level in enumerate(levels) if level == top]
        by_priority = len(best) < tied
        pick = best[0] if len(best) == 1 else rng.choice(best)
    spilled = None
    wait = ranking.wait
    if not fastest and wait is not None and len(ranked) > 1:
        spilled, pick = _spill(ranking, pick, wait, policy.patience_ms)
    chosen = ranked[pick]
    alternatives = list(ranking.names)
    del alternatives[pick]
    if request.target is not None:
        reason = f"target; X-Target-Backend {fleet.ids[chosen]}"
    elif len(ranked) == 1:
        reason = f"only-candidate; {explain.mode_token(mode)}"
    elif spilled is not None and wait is not None:
        reason = (f"spill-over; {explain.mode_token(mode)}: {fleet.ids[spilled]} queue wait "
                  f"{wait(spilled):.0f} ms over the {policy.patience_ms:.0f} ms patience")
    elif fastest:
        others = [chosen, *(r for r in ranked if r != chosen)]
        reason = f"{explain.fastest_token(request, mode)}; " + explain.fastest_detail(
            [fleet.ids[r] for r in others[:2]], [ranking.estimate(r) for r in others[:2]], tied, by_priority)
    else:
        detail = _weighted_detail(request, mode, chosen, ranking, w, by_priority)
        reason = f"{explain.weighted_token(request, mode)}; {detail}"
    return RoutingDecision(
        backend_id=fleet.ids[chosen],
        alternatives=tuple(alternatives),
        estimated_latency_ms=ranking.estimate(chosen),
        estimated_power_w=fleet.views[chosen].power_watts,
        reason=explain.with_excluded(reason, len(ranking.excluded)),
        mode=mode,
        scores=ranking.scores,
        excluded=ranking.excluded,
        warnings=tuple(ranking.warnings),
    )


def fail_over(decision: RoutingDecision, failed: str, why: str, *, power_w: float) -> RoutingDecision:
    """The decision after `failed` could not serve: the next alternative, explained as such."""
    if not decision.alternatives:
        raise ValueError(f"no alternative left after {failed!r}")
    chosen, *rest = decision.alternatives
    score = decision.scores.get(chosen)
    return replace(decision, backend_id=chosen, alternatives=tuple(rest),
                   estimated_latency_ms=score.estimated_latency_ms if score else decision.estimated_latency_ms,
                   estimated_power_w=power_w, reason=explain.failed_over(decision.reason, failed, why),
                   warnings=())


def _shifted(weights: Weights, latency_critical: bool, power_efficient: bool) -> Weights:
    # The usual request shifts nothing: no cache lookup, which would hash the eleven fields of a Weights.
    if not latency_critical and not power_efficient:
        return weights
    return _shift(weights, latency_critical, power_efficient)


@lru_cache(maxsize=64)
def _shift(weights: Weights, latency_critical: bool, power_efficient: bool) -> Weights:
    # Few distinct combinations exist; caching keeps validation and the weight vector off the hot path.
    return weights.shifted(latency_critical=latency_critical, power_efficient=power_efficient)


def _spill(ranking: Ranking, pick: int, wait: Callable[[int], float], patience_ms: float) -> tuple[int | None, int]:
    """(the row spilled from, the pick): the first by score whose wait is within patience, else the
    smallest estimate; (None, pick) when the pick's own wait is within patience."""
    ranked = ranking.ranked
    if wait(ranked[pick]) <= patience_ms:
        return None, pick
    patient = [i for i, r in enumerate(ranked) if wait(r) <= patience_ms]
    moved = patient[0] if patient else min(range(len(ranked)), key=lambda i: ranking.estimate(ranked[i]))
    return (ranked[pick], moved) if moved != pick else (None, pick)


def _weighted_detail(request: RouteRequest, mode: EfficiencyMode, chosen: int, ranking: Ranking, w: Weights,
                     by_priority: bool) -> str:
    if ranking.tied > 1:
        detail = explain.tie_detail(ranking.tied, by_priority)
    else:
        # No tie, so the chosen one is ranked first.
        detail = explain.gains_detail(w.vector, ranking.factors_of(chosen), ranking.factors_of(ranking.ranked[1]),
                                      len(ranking.ranked))
    if not request.power_efficient:
        return detail
    label = explain.mode_token(mode) + ("+latency-critical" if request.wants_low_latency else "")
    return f"{label}: {detail}"
