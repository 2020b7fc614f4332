"""Backend selection: filter the backends that may serve a request, estimate and score the rest, pick.

`select` is a pure function of the request, the backends' slow-changing facts as columns
(`fleet.Fleet`), their current load (`fleet.Load`), the efficiency mode and a random generator
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

Every backend is filtered and scored at once, as numpy arrays, so a decision costs about the same
with a hundred backends as with four. The score per backend and the exclusion texts are built
only when read. It does not know how views are built, how requests are sent or retried, or what
time it is: state that changes with time (breaker half-open, learned latency) is resolved when
the views are built.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from ollama_proxy.core.modes import POLICIES, EfficiencyMode
from ollama_proxy.core.routing import explain
from ollama_proxy.core.routing.fleet import (
    BREAKER_OPEN,
    DISABLED,
    ELIGIBLE,
    NO_MODEL,
    NOT_REPORTED,
    OVER_LATENCY,
    OVER_POWER,
    POWER_CAP,
    UNHEALTHY,
    Fleet,
    Load,
    closeness,
)
from ollama_proxy.core.routing.latency import expected_reply_tokens, queue_wait
from ollama_proxy.core.routing.state import BackendView, RouteRequest, SampleKind
from ollama_proxy.core.routing.weights import FACTORS, Weights, weights_for
from ollama_proxy.errors import NoBackendAvailable

# Scores within this distance of the best count as a tie (weighted modes), decided by priority and
# then at random, which also spreads load over identical backends.
TIE_MARGIN = 0.01


@dataclass(frozen=True, slots=True)
class BackendScore:
    """A weighted mean in [0, 1]; `factors` line up with `FACTORS` (see `as_dict`)."""

    total: float
    estimated_latency_ms: float
    factors: tuple[float, ...]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(FACTORS, self.factors, strict=True))


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
    screen = _Screen(request, fleet, load, target, cap, mode)
    eligible = screen.eligible
    if not len(eligible):
        raise explain.rejection(request, screen.excluded, screen.codes, screen.model_nowhere, cap)

    w = _shifted(weights or weights_for(mode), request.wants_low_latency, request.power_efficient)
    table = _ScoreTable(fleet, screen, request, load, w)
    fastest = (policy.fastest or request.wants_low_latency) and not request.power_efficient
    rows, ranked, names, tied = _rank(fleet, table, screen, fastest, tie_margin)
    pick, by_priority = 0, False
    if tied > 1 and fleet.one_priority:
        pick = rng.choice(range(tied))
    elif tied > 1:
        levels = fleet.priority_level[rows[:tied]]
        best = (levels == levels.max()).nonzero()[0].tolist()
        by_priority = len(best) < tied
        pick = best[0] if len(best) == 1 else rng.choice(best)
    spilled = None
    if not fastest and screen.wait is not None and len(ranked) > 1:
        spilled, pick = _spill(ranked, pick, screen, policy.patience_ms)
    chosen = ranked[pick]
    alternatives = list(names)
    del alternatives[pick]
    if request.target is not None:
        reason = f"target; X-Target-Backend {fleet.ids[chosen]}"
    elif len(ranked) == 1:
        reason = f"only-candidate; {explain.mode_token(mode)}"
    elif spilled is not None and screen.wait is not None:
        reason = (f"spill-over; {explain.mode_token(mode)}: {fleet.ids[spilled]} queue wait "
                  f"{screen.wait.item(spilled):.0f} ms over the {policy.patience_ms:.0f} ms patience")
    elif fastest:
        others = [chosen, *(r for r in ranked if r != chosen)]
        reason = f"{explain.fastest_token(request, mode)}; " + explain.fastest_detail(
            [fleet.ids[r] for r in others[:2]], [screen.estimates.item(r) for r in others[:2]], tied, by_priority)
    else:
        detail = _weighted_detail(request, mode, chosen, ranked, table, w, tied, by_priority)
        reason = f"{explain.weighted_token(request, mode)}; {detail}"
    return RoutingDecision(
        backend_id=fleet.ids[chosen],
        alternatives=tuple(alternatives),
        estimated_latency_ms=screen.estimates.item(chosen),
        estimated_power_w=fleet.views[chosen].power_watts,
        reason=explain.with_excluded(reason, len(screen.excluded)),
        mode=mode,
        scores=table,
        excluded=screen.excluded,
        warnings=tuple(screen.warnings),
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


def _rank(fleet: Fleet, table: _ScoreTable, screen: _Screen, fastest: bool,
          tie_margin: float) -> tuple[np.ndarray, list[int], list[str], int]:
    """(rows best first, the same as a list, their ids, how many lead tied); the fleet keeps the
    last one, as decisions in a row with nothing changed read the same arrays."""
    eligible = screen.eligible
    arrays = (table.total, screen.estimates, eligible)
    last = fleet.last_ranking
    if (last is not None and last[1] == (fastest, tie_margin)
            and all(a is b for a, b in zip(last[0], arrays, strict=True))):
        return last[2]
    rows, tied = eligible, 1
    if len(eligible) > 1:
        whole = len(eligible) == len(fleet)
        scored = table.total if whole else table.total[eligible]
        if fastest:
            estimated = screen.estimates if whole else screen.estimates[eligible]
            order = np.lexsort((-scored, estimated))
            # Read element by element: the ties, if any, are a short prefix.
            first, top = order.item(0), scored.item(order.item(0))
            while (tied < len(order) and estimated.item(order.item(tied)) == estimated.item(first)
                   and top - scored.item(order.item(tied)) <= tie_margin):
                tied += 1
        else:
            order = (-scored).argsort(kind="stable")
            ranked_scores = scored[order].tolist()
            # Sorted high to low, the near-ties are a prefix of the ranking.
            while tied < len(order) and ranked_scores[0] - ranked_scores[tied] <= tie_margin:
                tied += 1
        rows = eligible[order]
    # Indexed by the array, not the list: numpy would convert a hundred-element list first.
    ranking = rows, rows.tolist(), fleet.id_array[rows].tolist(), tied
    fleet.last_ranking = arrays, (fastest, tie_margin), ranking
    return ranking


@lru_cache(maxsize=64)
def _shifted(weights: Weights, latency_critical: bool, power_efficient: bool) -> Weights:
    # Few distinct combinations exist; caching keeps validation and the weight vector off the hot path.
    return weights.shifted(latency_critical=latency_critical, power_efficient=power_efficient)


def _spill(ranked: list[int], pick: int, screen: _Screen, patience_ms: float) -> tuple[int | None, int]:
    """(the row spilled from, the pick): the first by score whose wait is within patience, else the
    smallest estimate; (None, pick) when the pick's own wait is within patience."""
    wait = screen.wait
    assert wait is not None
    if wait.item(ranked[pick]) <= patience_ms:
        return None, pick
    patient = [i for i, r in enumerate(ranked) if wait.item(r) <= patience_ms]
    moved = patient[0] if patient else min(range(len(ranked)), key=lambda i: screen.estimates.item(ranked[i]))
    return (ranked[pick], moved) if moved != pick else (None, pick)


def _weighted_detail(request: RouteRequest, mode: EfficiencyMode, chosen: int, ranked: list[int],
                     table: _ScoreTable, w: Weights, tied: int, by_priority: bool) -> str:
    if tied > 1:
        detail = explain.tie_detail(tied, by_priority)
    else:
        # No tie, so the chosen one is ranked first.
        second = ranked[1]
        gains = [(weight * (f.item(chosen) - f.item(second)), k)
                 for weight, f, k in zip(w.vector, table.factors, FACTORS, strict=True)]
        detail = explain.gains_detail(gains, len(ranked))
    if not request.power_efficient:
        return detail
    label = explain.mode_token(mode) + ("+latency-critical" if request.wants_low_latency else "")
    return f"{label}: {detail}"


class _Screen:
    """The filter and the estimates: which rows may serve, why the others may not, and per row the
    time until answered (`estimates`), the first-token time with the queue wait (`first_token`,
    the latency factor's input) and the queue wait itself (`wait`, None when nobody waits)."""

    def __init__(self, request: RouteRequest, fleet: Fleet, load: Load, target: int | None,
                 power_cap_w: float | None, mode: EfficiencyMode) -> None:
        model = fleet.for_model(request.model)
        self.latency = latency = fleet.latency(request.model, request.kind)
        ahead = load.ahead(request.priority)
        # Usually every backend has a free slot, and then the estimate is the cached column itself.
        self.wait: np.ndarray | None = None
        self.first_token: np.ndarray = latency.ttft_ms
        # Nothing in flight or queued anywhere: every backend has a free slot, no arithmetic needed.
        if not (load.idle and fleet.slot_when_idle) and bool((ahead - fleet.slack).max() > 0):
            self.wait = queue_wait(latency.service_ms, ahead, fleet.max_concurrent)
            self.first_token = latency.ttft_ms + self.wait
        if request.model is None:
            self.fits, self.estimates = model.resident, self.first_token
        else:
            reply = (expected_reply_tokens(request.reply_tokens, fleet.typical_reply_tokens(request.model))
                     if latency.timed and request.kind is SampleKind.GENERATION else 0.0)
            self.fits, ready = fleet.ready(request.model, request.context_tokens, request.kind, reply)
            self.estimates = ready if self.wait is None else ready + self.wait
        self.warnings: list[str] = []
        why = model.exclusion
        if power_cap_w is not None:
            if target is not None:
                if fleet.power_watts.item(target) > power_cap_w:
                    self.warnings.append(f"{fleet.ids[target]} draws {fleet.power_watts.item(target):g} W, over "
                                         f"{mode.value}'s {power_cap_w:g} W cap; served because X-Target-Backend "
                                         "asked for it")
            else:
                why = np.where((why == ELIGIBLE) & (fleet.power_watts > power_cap_w), POWER_CAP, why)
        if request.max_power_watts is not None:
            why = np.where((why == ELIGIBLE) & (fleet.power_watts > request.max_power_watts), OVER_POWER, why)
        if request.max_latency_ms is not None:
            why = np.where((why == ELIGIBLE) & (self.estimates > request.max_latency_ms), OVER_LATENCY, why)
        if target is not None:
            eligible = np.array([target] if why[target] == ELIGIBLE else [], dtype=np.intp)
            considered = 1
            self.model_nowhere = request.model is not None and not model.may_have[target]
            self.codes = why[target:target + 1]
        else:
            eligible = model.eligible if why is model.exclusion else (why == ELIGIBLE).nonzero()[0]
            considered = len(why)
            self.model_nowhere = model.nowhere
            self.codes = why
        refused = considered - len(eligible)
        # Hardware at a critical temperature is spared whenever anything else can serve; when nothing
        # else can, a slow answer beats a refusal, and the thermal factor still scores it lowest.
        spared = eligible[:0]
        if fleet.any_critical:
            hot = fleet.critical[eligible]
            if target is not None and hot.any():
                view = fleet.views[target]
                why_hot = view.thermal.reason or "no reason given"
                self.warnings.append(f"{view.id} is at a critical temperature ({why_hot}); served because "
                                     "X-Target-Backend asked for it")
            elif hot.any() and not hot.all():
                spared, eligible = eligible[hot], eligible[~hot]
        self.eligible: np.ndarray = eligible
        self.excluded = _Excluded(request, fleet, why, target, spared, refused, self.estimates, power_cap_w)


class _Excluded(Mapping[str, str]):
    """Backend id -> why it was left out, in backend order (thermal exclusions last); the texts are
    written only when read, which a served request rarely does."""

    def __init__(self, request: RouteRequest, fleet: Fleet, why: np.ndarray, target: int | None,
                 spared: np.ndarray, refused: int, estimates: np.ndarray, power_cap_w: float | None) -> None:
        self._request, self._fleet, self._why, self._target = request, fleet, why, target
        self._spared, self._count, self._estimates = spared, refused + len(spared), estimates
        self._cap = power_cap_w
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
        if code == POWER_CAP:
            return (f"power {view.power_watts:g} W over ultra-efficiency's {self._cap:g} W cap "
                    "(router.ultra_efficiency_max_watts)")
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
        latency = (closeness(screen.first_token, w.latency_ref_ms) if screen.wait is not None
                   else screen.latency.factor(w.latency_ref_ms))
        # Load: occupancy including the queue.
        if load.idle:
            busy, busy_term = fleet.ones, static.idle_load_term
        else:
            busy = 1.0 / (1.0 + load.busy() / fleet.max_concurrent)
            busy_term = v[2] * busy
        fits = screen.fits
        # Idle and unchanged since the last decision (the usual case), the totals are the last ones.
        key = (id(w), request.model, request.kind, request.context_tokens)
        cached = fleet.idle_totals.get(key) if load.idle else None
        if cached is not None and cached[0] is w and cached[1] is latency and cached[2] is fits:
            self.total: np.ndarray = cached[3]
        else:
            # Term by term in `FACTORS` order, as `sum` over one backend's factors adds them; in place,
            # into the one new array, as each temporary would cost an allocation.
            total = v[0] * latency
            total += static.power_term
            total += busy_term
            total += static.thermal_term
            total += static.noise_term
            total += static.priority_term
            total += v[6] * model.resident
            total += v[7] * fits
            total += static.health_term
            total /= w.total
            self.total = total
            if load.idle:
                fleet.idle_totals[key] = (w, latency, fits, self.total)
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

