"""Screening and scoring one backend at a time, in plain Python, for a small fleet (up to `select.SCALAR_UP_TO`).

The same pass as `vector.py`, in the same order of operations, so that every float comes out the
same: a laptop's two to eight backends would otherwise pay numpy's per-call cost dozens of times
per request. It reads the fleet's columns as lists (`Fleet.lists`, `Fleet.model_lists`), learned
latency fresh from the book (a few lookups per backend; the book changes after every request) and
the load as it is. See `select.py` for the rules.
"""

from __future__ import annotations

from collections.abc import Mapping

from ollama_proxy.core.modes import EfficiencyMode
from ollama_proxy.core.routing import explain
from ollama_proxy.core.routing.fleet import ELIGIBLE, OVER_LATENCY, OVER_POWER, POWER_CAP, Fleet
from ollama_proxy.core.routing.latency import DEFAULT_LOAD_MS, expected_reply_tokens, ms_per_token
from ollama_proxy.core.routing.load import Load
from ollama_proxy.core.routing.ranking import NOTHING_EXCLUDED, Excluded, Ranking, Scores
from ollama_proxy.core.routing.state import RouteRequest, SampleKind
from ollama_proxy.core.routing.weights import Weights


def rank(request: RouteRequest, fleet: Fleet, load: Load, target: int | None, power_cap_w: float | None,
         mode: EfficiencyMode, w: Weights, fastest: bool, tie_margin: float) -> Ranking:
    """The eligible rows ranked, or `NoBackendAvailable` when there are none."""
    rows, model, ids = fleet.lists, request.model, fleet.ids
    cols = fleet.model_lists(model)
    n, max_concurrent = len(ids), rows.max_concurrent
    learned = loads = None
    # The reply a generation is estimated for, charged at each row's learned speed (nothing where none was learned).
    reply = 0.0
    if model is not None:
        learned = fleet.learned.column(ids, model, request.kind)
        loads = fleet.learned.load_column(ids, model)
        if request.kind is SampleKind.GENERATION and any(learned):
            reply = expected_reply_tokens(request.reply_tokens, fleet.typical_reply_tokens(model))
    flying, queued = (None, None) if load.idle else (load.flying, load.waiting)
    priority, context_tokens = request.priority, request.context_tokens
    avg_latency, configured_service = rows.avg_latency_ms, rows.service_ms
    resident, context = cols.resident, cols.context

    # Per row: the first-token time (learned, else configured) with the queue wait where requests
    # ahead of this one fill the backend's slots; fits (resident at a large enough context); and the
    # time until answered: ready (the load where it does not fit), the reply, the wait, added in that order.
    first_token, waits, estimates = [0.0] * n, [0.0] * n, [0.0] * n
    fits = resident if loads is None else [1.0] * n
    any_wait = False
    for r in range(n):
        stats = learned[r] if learned is not None else None
        if stats is None:
            ttft, service, per_token = avg_latency[r], configured_service[r], 0.0
        else:
            ttft, service, per_token = stats.ttft_ms, stats.service_ms, ms_per_token(stats)
        wait = 0.0
        if flying is not None:
            ahead = flying[r] + sum(queued[r][priority:]) if queued is not None else flying[r]
            beyond = ahead - max_concurrent[r] + 1
            if beyond > 0:
                waits[r] = wait = beyond / max_concurrent[r] * service
                any_wait = True
        first_token[r] = ttft + wait if wait else ttft
        if loads is None:
            estimates[r] = first_token[r]
            continue
        fit = fits[r] = resident[r] if context_tokens is None else 1.0 if context[r] >= context_tokens else 0.0
        loading = loads[r]
        estimate = ttft + (1.0 - fit) * (DEFAULT_LOAD_MS if loading is None else loading)
        if reply:
            estimate = estimate + reply * per_token
        estimates[r] = estimate + wait if wait else estimate
    wait_of = waits if any_wait else None

    # Who may serve: the model's exclusions, then the request's budgets, then critical temperatures.
    why, warnings = cols.exclusion, []
    power = rows.power_watts
    if power_cap_w is not None:
        if target is not None:
            if power[target] > power_cap_w:
                warnings.append(explain.over_cap_warning(fleet.ids[target], power[target], mode, power_cap_w))
        else:
            why = [POWER_CAP if c == ELIGIBLE and p > power_cap_w else c for c, p in zip(why, power, strict=True)]
    if request.max_power_watts is not None:
        budget = request.max_power_watts
        why = [OVER_POWER if c == ELIGIBLE and p > budget else c for c, p in zip(why, power, strict=True)]
    if request.max_latency_ms is not None:
        budget = request.max_latency_ms
        why = [OVER_LATENCY if c == ELIGIBLE and e > budget else c for c, e in zip(why, estimates, strict=True)]
    if target is not None:
        eligible = [target] if why[target] == ELIGIBLE else []
        considered, codes = 1, [why[target]]
        model_nowhere = model is not None and not cols.may_have[target]
    else:
        eligible = cols.eligible if why is cols.exclusion else [r for r in range(n) if why[r] == ELIGIBLE]
        considered, codes, model_nowhere = n, why, cols.nowhere
    refused = considered - len(eligible)
    spared: list[int] = []
    if fleet.any_critical:
        critical = rows.critical
        hot = [r for r in eligible if critical[r]]
        if target is not None and hot:
            warnings.append(explain.critical_warning(fleet.views[target]))
        elif hot and len(hot) < len(eligible):
            spared, eligible = hot, [r for r in eligible if not critical[r]]
    excluded: Mapping[str, str] = NOTHING_EXCLUDED if not refused and not spared else Excluded(
        request, fleet, why, target, spared, refused, estimates, power_cap_w)
    if not eligible:
        raise explain.rejection(request, excluded, codes, model_nowhere, power_cap_w)

    # The factors in `FACTORS` order and their weighted mean, summed in that order.
    v, total_weight, reference = w.vector, w.total, w.latency_ref_ms
    power_factor = fleet.power_factor(w)
    thermal, noise, priority_factor, health = rows.thermal, rows.noise, rows.priority, rows.health
    factors: dict[int, tuple[float, ...]] = {}
    totals: dict[int, float] = {}
    for r in eligible:
        ratio = first_token[r] / reference
        occupancy = 1.0
        if flying is not None:
            busy = flying[r] + sum(queued[r]) if queued is not None else flying[r]
            occupancy = 1.0 / (1.0 + busy / max_concurrent[r])
        row_factors = factors[r] = (1.0 / (1.0 + ratio * ratio), power_factor[r], occupancy, thermal[r], noise[r],
                                    priority_factor[r], resident[r], fits[r], health[r])
        # Left to right, as vector.py adds the terms (`sum` over floats compensates since Python 3.12).
        totals[r] = (v[0] * row_factors[0] + v[1] * row_factors[1] + v[2] * occupancy + v[3] * thermal[r]
                     + v[4] * noise[r] + v[5] * priority_factor[r] + v[6] * resident[r] + v[7] * fits[r]
                     + v[8] * health[r]) / total_weight

    # Best first; the near-ties lead.
    ranked, tied = eligible, 1
    if len(eligible) > 1:
        if fastest:
            ranked = sorted(eligible, key=lambda r: (estimates[r], -totals[r]))
            first = ranked[0]
            while (tied < len(ranked) and estimates[ranked[tied]] == estimates[first]
                   and totals[first] - totals[ranked[tied]] <= tie_margin):
                tied += 1
        else:
            ranked = sorted(eligible, key=totals.__getitem__, reverse=True)  # stable: equal totals keep row order
            top = totals[ranked[0]]
            while tied < len(ranked) and top - totals[ranked[tied]] <= tie_margin:
                tied += 1
    return Ranking(ranked, [fleet.ids[r] for r in ranked], tied, estimates.__getitem__,
                   None if wait_of is None else wait_of.__getitem__, factors.__getitem__,
                   Scores(fleet, eligible, totals, estimates, factors), excluded, warnings)
