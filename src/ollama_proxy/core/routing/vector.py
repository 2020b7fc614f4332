"""Screening and scoring every backend at once, as numpy arrays (`fleet.Fleet`'s columns), so that a
decision costs about the same with a hundred backends as with sixteen. The scores and exclusion
texts are built only when read. See `select.py` for the rules, `scalar.py` for the same pass one
backend at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from ollama_proxy.core.modes import EfficiencyMode
from ollama_proxy.core.routing import explain
from ollama_proxy.core.routing.fleet import ELIGIBLE, OVER_LATENCY, OVER_POWER, POWER_CAP, Fleet, closeness
from ollama_proxy.core.routing.latency import expected_reply_tokens, queue_wait
from ollama_proxy.core.routing.load import Load
from ollama_proxy.core.routing.ranking import BackendScore, Excluded, Ranking
from ollama_proxy.core.routing.state import RouteRequest, SampleKind
from ollama_proxy.core.routing.weights import Weights


def rank(request: RouteRequest, fleet: Fleet, load: Load, target: int | None, power_cap_w: float | None,
         mode: EfficiencyMode, w: Weights, fastest: bool, tie_margin: float) -> Ranking:
    """The eligible rows ranked, or `NoBackendAvailable` when there are none."""
    screen = _Screen(request, fleet, load, target, power_cap_w, mode)
    if not len(screen.eligible):
        raise explain.rejection(request, screen.excluded, screen.codes, screen.model_nowhere, power_cap_w)
    table = _ScoreTable(fleet, screen, request, load, w)
    ranked, names, tied = _order(fleet, table, screen, fastest, tie_margin)
    wait = screen.wait
    return Ranking(ranked, names, tied, screen.estimates.item, None if wait is None else wait.item, table.factors_of,
                   table, screen.excluded, screen.warnings)


def _order(fleet: Fleet, table: _ScoreTable, screen: _Screen, fastest: bool,
           tie_margin: float) -> tuple[list[int], list[str], int]:
    """(rows best first, their ids, how many lead tied); the fleet keeps the last one, as decisions
    in a row with nothing changed read the same arrays."""
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
    ranking = rows.tolist(), fleet.id_array[rows].tolist(), tied
    fleet.last_ranking = arrays, (fastest, tie_margin), ranking
    return ranking


class _Screen:
    """The filter and the estimates: which rows may serve, why the others may not, and per row the
    time until answered (`estimates`), the first-token time with the queue wait (`first_token`,
    the latency factor's input) and the queue wait itself (`wait`, None when nobody waits)."""

    def __init__(self, request: RouteRequest, fleet: Fleet, load: Load, target: int | None,
                 power_cap_w: float | None, mode: EfficiencyMode) -> None:
        model = fleet.for_model(request.model)
        self.latency = latency = fleet.latency(request.model, request.kind)
        # Usually every backend has a free slot, and then the estimate is the cached column itself.
        self.wait: np.ndarray | None = None
        self.first_token: np.ndarray = latency.ttft_ms
        # Nothing in flight or queued anywhere: every backend has a free slot (each has one at least),
        # and the load's rows need not become arrays.
        if not load.idle:
            ahead = load.ahead(request.priority)
            if bool((ahead - fleet.slack).max() > 0):
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
                    self.warnings.append(explain.over_cap_warning(fleet.ids[target], fleet.power_watts.item(target),
                                                                  mode, power_cap_w))
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
                self.warnings.append(explain.critical_warning(fleet.views[target]))
            elif hot.any() and not hot.all():
                spared, eligible = eligible[hot], eligible[~hot]
        self.eligible: np.ndarray = eligible
        self.excluded = Excluded(request, fleet, why, target, spared.tolist(), refused, self.estimates, power_cap_w)


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
            # Term by term in `FACTORS` order, left to right as scalar.py adds them; in place,
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

