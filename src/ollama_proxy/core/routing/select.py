"""Backend selection: filter the backends that may serve a request, score the rest, explain the pick.

`select` is a pure function of the request, the backends' slow-changing facts as columns
(`fleet.Fleet`), their current load (`fleet.Load`), the efficiency mode and a random generator
used only to break near-ties; `select_backend` does the same from a list of `BackendView`s. Both
return a `RoutingDecision` (the pick, the failover order, estimates, a one-line reason and every
score) or raise `NoBackendAvailable` whose `reasons` say which constraint excluded which backend
and whose `status` is the HTTP answer: 400 unknown target, 404 model nowhere, 503 otherwise.

Every backend is filtered and scored at once, as numpy arrays, so a decision costs about the same
with a hundred backends as with four. The arithmetic is the scalar formula's, term by term in the
same order, so scores (and therefore ties) are exactly what the one-backend-at-a-time reading of
the formula gives. The score per backend and the exclusion texts are built only when read.

It does not know how views are built, how requests are sent or retried, or what time it is: state
that changes with time (breaker half-open, learned latency) is resolved when the views are built.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from ollama_proxy.core.modes import EfficiencyMode
from ollama_proxy.core.routing.fleet import (
    BREAKER_OPEN,
    DISABLED,
    ELIGIBLE,
    NO_MODEL,
    NOT_REPORTED,
    OVER_LATENCY,
    OVER_POWER,
    UNHEALTHY,
    Fleet,
    Load,
    closeness,
)
from ollama_proxy.core.routing.latency import with_queue_wait
from ollama_proxy.core.routing.state import BackendView, RouteRequest
from ollama_proxy.core.routing.weights import FACTORS, Weights, weights_for
from ollama_proxy.errors import NoBackendAvailable

# Scores within this distance of the best count as a tie and are picked at random, which also
# spreads load over identical backends.
TIE_MARGIN = 0.01

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
    """Pick a backend for `request` from one snapshot of each backend (columns built per call)."""
    return select(request, Fleet(backends), Load.of(backends), mode, weights, rng=rng, tie_margin=tie_margin)


def select(request: RouteRequest, fleet: Fleet, load: Load, mode: EfficiencyMode = EfficiencyMode.BALANCED,
           weights: Weights | None = None, *, rng: random.Random, tie_margin: float = TIE_MARGIN
           ) -> RoutingDecision:
    """Pick a backend for `request`; `weights` overrides the mode's table (headers still shift it)."""
    if not len(fleet):
        raise NoBackendAvailable("no backends are configured", status=503)
    target = None
    if request.target is not None:
        target = fleet.index.get(request.target)
        if target is None:
            raise NoBackendAvailable(f"unknown X-Target-Backend {request.target!r}; configured backends: "
                                     f"{', '.join(fleet.ids)}", {request.target: "not configured"}, status=400)

    screen = _Screen(request, fleet, load, target)
    eligible = screen.eligible
    if not len(eligible):
        raise _rejection(request, dict(screen.excluded), screen.model_nowhere)

    w = _shifted(weights or weights_for(mode), request.wants_low_latency, request.power_efficient)
    table = _ScoreTable(fleet, screen, request, load, w)
    rows, tied = eligible, 1
    if len(eligible) > 1:
        scored = table.total if len(eligible) == len(fleet) else table.total[eligible]
        order = (-scored).argsort(kind="stable")
        rows = eligible[order]
        ranked_scores = scored[order].tolist()
        # Sorted high to low, the near-ties are a prefix of the ranking.
        best = ranked_scores[0]
        while tied < len(ranked_scores) and best - ranked_scores[tied] <= tie_margin:
            tied += 1
    ranked = rows.tolist()
    pick = rng.choice(range(tied)) if tied > 1 else 0
    chosen = ranked[pick]
    # Indexed by the array, not the list: numpy would convert a hundred-element list first.
    alternatives = fleet.id_array[rows].tolist()
    del alternatives[pick]
    return RoutingDecision(
        backend_id=fleet.ids[chosen],
        alternatives=tuple(alternatives),
        estimated_latency_ms=screen.estimates.item(chosen),
        estimated_power_w=fleet.views[chosen].power_watts,
        reason=_reason(request, mode, chosen, ranked, table, w, tied, len(screen.excluded)),
        mode=mode,
        scores=table,
        excluded=screen.excluded,
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


class _Screen:
    """The filter: latency estimates, which rows may serve, and why the others may not."""

    def __init__(self, request: RouteRequest, fleet: Fleet, load: Load, target: int | None) -> None:
        model = fleet.for_model(request.model)
        self.latency = latency = fleet.latency(request.model)
        ahead = load.ahead(request.priority)
        # Usually every backend has a free slot, and then the estimate is the cached column itself.
        self.queueing = bool((ahead - fleet.slack).max() > 0)
        self.estimates: np.ndarray = (with_queue_wait(latency.ttft_ms, latency.service_ms, ahead, fleet.max_concurrent)
                                      if self.queueing else latency.ttft_ms)
        why = model.exclusion
        if request.max_power_watts is not None:
            why = np.where((why == ELIGIBLE) & (fleet.power_watts > request.max_power_watts), OVER_POWER, why)
        if request.max_latency_ms is not None:
            why = np.where((why == ELIGIBLE) & (self.estimates > request.max_latency_ms), OVER_LATENCY, why)
        if target is not None:
            eligible = np.array([target] if why[target] == ELIGIBLE else [], dtype=np.intp)
            considered = 1
            self.model_nowhere = request.model is not None and not model.may_have[target]
        else:
            eligible = model.eligible if why is model.exclusion else (why == ELIGIBLE).nonzero()[0]
            considered = len(why)
            self.model_nowhere = model.nowhere
        refused = considered - len(eligible)
        # Hardware at a critical temperature is spared whenever anything else can serve; when nothing
        # else can, a slow answer beats a refusal, and the thermal factor still scores it lowest.
        spared = eligible[:0]
        if fleet.any_critical:
            hot = fleet.critical[eligible]
            if hot.any() and not hot.all():
                spared, eligible = eligible[hot], eligible[~hot]
        self.eligible: np.ndarray = eligible
        self.excluded = _Excluded(request, fleet, why, target, spared, refused, self.estimates)


class _Excluded(Mapping[str, str]):
    """Backend id -> why it was left out, in backend order (thermal exclusions last); the texts are
    written only when read, which a served request rarely does."""

    def __init__(self, request: RouteRequest, fleet: Fleet, why: np.ndarray, target: int | None,
                 spared: np.ndarray, refused: int, estimates: np.ndarray) -> None:
        self._request, self._fleet, self._why, self._target = request, fleet, why, target
        self._spared, self._count, self._estimates = spared, refused + len(spared), estimates
        self._texts: dict[str, str] | None = None

    def _all(self) -> dict[str, str]:
        if self._texts is None:
            rows = (self._why != ELIGIBLE).nonzero()[0].tolist()
            if self._target is not None:
                rows = [r for r in rows if r == self._target]
            ids, views = self._fleet.ids, self._fleet.views
            self._texts = {ids[r]: self._text(r) for r in rows}
            self._texts.update((ids[r], f"thermal critical ({views[r].thermal.reason or 'no reason given'})")
                               for r in self._spared.tolist())
        return self._texts

    def _text(self, row: int) -> str:
        view, request, code = self._fleet.views[row], self._request, self._why.item(row)
        if code == OVER_POWER:
            return f"power {view.power_watts:g} W over the {request.max_power_watts:g} W budget"
        if code == OVER_LATENCY:
            return (f"estimated latency {self._estimates.item(row):.0f} ms over the "
                    f"{request.max_latency_ms:.0f} ms budget")
        if code == NO_MODEL:
            return f"model {request.model!r} not available"
        return _FIXED_TEXT[code]

    def __getitem__(self, backend_id: str) -> str:
        return self._all()[backend_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return self._count


_FIXED_TEXT = {DISABLED: "disabled", UNHEALTHY: "unhealthy (failing health checks)",
               BREAKER_OPEN: "circuit breaker open", NOT_REPORTED: "model list not reported yet"}


class _ScoreTable(Mapping[str, BackendScore]):
    """Every row's factors and weighted total, computed at once; read as backend id -> `BackendScore`
    over the eligible backends, each built only when read."""

    def __init__(self, fleet: Fleet, screen: _Screen, request: RouteRequest, load: Load, w: Weights) -> None:
        model = fleet.for_model(request.model)
        static = fleet.weighted(w)
        v = w.vector
        latency = (closeness(screen.estimates, w.latency_ref_ms) if screen.queueing
                   else screen.latency.factor(w.latency_ref_ms))
        # Load: occupancy including the queue.
        if load.idle:
            busy, busy_term = fleet.ones, static.idle_load_term
        else:
            busy = 1.0 / (1.0 + load.busy() / fleet.max_concurrent)
            busy_term = v[2] * busy
        fits = model.fits(request.context_tokens) if request.model is not None else model.resident
        # Term by term in `FACTORS` order, as `sum` over one backend's factors adds them.
        total = (v[0] * latency + static.power_term + busy_term + static.thermal_term + static.noise_term
                 + static.priority_term + v[6] * model.resident + v[7] * fits + static.health_term)
        self.total: np.ndarray = total / w.total
        self.factors = (latency, static.power, busy, fleet.thermal, fleet.noise, fleet.priority, model.resident,
                        fits, fleet.health)
        self._fleet, self._screen = fleet, screen
        self._eligible: frozenset[int] | None = None

    def factors_of(self, row: int) -> tuple[float, ...]:
        return tuple([f.item(row) for f in self.factors])

    def __getitem__(self, backend_id: str) -> BackendScore:
        row = self._fleet.index.get(backend_id)
        if self._eligible is None:
            self._eligible = frozenset(self._screen.eligible.tolist())
        if row not in self._eligible:
            raise KeyError(backend_id)
        return BackendScore(self.total.item(row), self._screen.estimates.item(row), self.factors_of(row))

    def __iter__(self) -> Iterator[str]:
        return (self._fleet.ids[r] for r in self._screen.eligible.tolist())

    def __len__(self) -> int:
        return len(self._screen.eligible)


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


def _reason(request: RouteRequest, mode: EfficiencyMode, chosen: int, ranked: list[int], table: _ScoreTable,
            w: Weights, tied: int, excluded: int) -> str:
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
        second = ranked[1]
        gains = [weight * (f.item(chosen) - f.item(second)) for weight, f in zip(w.vector, table.factors, strict=True)]
        top = sorted(zip(gains, FACTORS, strict=True), reverse=True)[:2]
        why = ", ".join(_WHY[k] for gain, k in top if gain > 0) or "best overall"
        why += f" (best of {len(ranked)})"
    if excluded:
        why += f"; {excluded} excluded"
    return f"{label}: {why}"
