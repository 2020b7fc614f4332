"""Backend facts as columns, one numpy array per fact and one row per backend, for fast selection.

Selection scores every backend on every request. Done one Python object at a time that costs
microseconds per backend, which at a hundred backends is milliseconds per request. `Fleet` lays
out once what changes slowly (configuration, health, breaker, thermal state) and derives on first
use, per model, what depends on the model (has it, has it loaded and at which context, learned
latency, speed and load time per kind of work); what changes with every request (in flight,
queued) is `load.Load`. `vector.py` scores all rows at once from both; `scalar.py` reads the same
columns as Python lists (`RowLists`).

Pure: built from `BackendView`s. It does not know where they came from or when they change; the
owner builds a new `Fleet` when they do (the router keeps one per change, see `service/router.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import numpy as np

from ollama_proxy.core.routing.latency import DEFAULT_LOAD_MS, default_service_ms, ms_per_token
from ollama_proxy.core.routing.state import BackendView, BreakerState, LatencyStats, SampleKind, ThermalLevel
from ollama_proxy.core.routing.weights import Weights
from ollama_proxy.core.system.thermal import PENALTY as THERMAL_PENALTY

# Why a row cannot serve: the first check that failed, cheapest and most fundamental first.
# Plain ints, not an enum: numpy compares against them on every request.
ELIGIBLE, DISABLED, UNHEALTHY, BREAKER_OPEN, NO_MODEL, NOT_REPORTED, POWER_CAP, OVER_POWER, OVER_LATENCY = range(9)

# How quiet the hardware is under load: discrete GPUs and CPUs spin fans up, NPUs and iGPUs do not.
_QUIET = {"npu": 1.0, "igpu": 0.9, "other": 0.6, "cpu": 0.3, "nvidia": 0.1}
_HOT = frozenset({ThermalLevel.HOT, ThermalLevel.CRITICAL})
_HEALTH = {BreakerState.CLOSED: 1.0, BreakerState.HALF_OPEN: 0.3}


class LearnedLatency(Protocol):
    """Where learned latency comes from (`LatencyBook` is one); model names are canonical."""

    def revision(self, model: str) -> int: ...
    def changed_since(self, model: str, revision: int) -> set[str] | None: ...
    def column(self, backend_ids: Sequence[str], model: str, kind: SampleKind) -> list[LatencyStats | None]: ...
    def load_column(self, backend_ids: Sequence[str], model: str) -> list[float | None]: ...
    def typical_reply_tokens(self, model: str) -> float | None: ...


class _ViewLatency:
    """Learned latency as copied into the views: fixed for the life of the fleet."""

    def __init__(self, views: Sequence[BackendView]) -> None:
        self._views = views

    def revision(self, model: str) -> int:
        return 0

    def changed_since(self, model: str, revision: int) -> set[str] | None:
        return set()

    def column(self, backend_ids: Sequence[str], model: str, kind: SampleKind) -> list[LatencyStats | None]:
        if kind is SampleKind.EMBEDDING:
            return [v.embedding_latency.get(model) for v in self._views]
        return [v.latency.get(model) for v in self._views]

    def load_column(self, backend_ids: Sequence[str], model: str) -> list[float | None]:
        return [v.load_ms.get(model) for v in self._views]

    def typical_reply_tokens(self, model: str) -> float | None:
        return None


@dataclass(frozen=True, slots=True)
class ModelColumns:
    """What one requested model (None: a call naming no model) means for every row."""

    exclusion: np.ndarray  # int8 reason code, before the request's budgets
    eligible: np.ndarray  # rows whose code is ELIGIBLE
    may_have: np.ndarray  # bool: has it, or has not reported (a 404 needs every one to say no)
    nowhere: bool  # no row may have it
    resident: np.ndarray  # float 1.0/0.0: loaded now
    context: np.ndarray  # float: context it is loaded with; inf when unknown, -inf when not loaded

    def fits(self, context_tokens: int | None) -> np.ndarray:
        """1.0 where the model is loaded at a large enough context (Ollama reloads a runner whose
        num_ctx differs, reference 4.5), else 0.0."""
        if context_tokens is None:
            return self.resident
        return (self.context >= context_tokens).astype(np.float64)


def closeness(values: np.ndarray, reference: float) -> np.ndarray:
    """The latency and power factors: 1 at zero, 0.5 at `reference`, flat near zero so small
    differences matter little."""
    ratio = values / reference
    return 1.0 / (1.0 + ratio * ratio)


@dataclass(slots=True)
class LatencyColumns:
    """Per row, the time to first token with nobody waiting, the slot hold time, the load time and
    the generation time per reply token (0 where not learned), for one model and kind of work."""

    revision: int  # of the learned numbers these were read from
    ttft_ms: np.ndarray
    service_ms: np.ndarray
    load_ms: np.ndarray
    ms_per_token: np.ndarray
    _factors: dict[float, np.ndarray] = field(default_factory=dict)
    timed: bool = field(init=False)  # some row's speed was learned: generation time counts

    def __post_init__(self) -> None:
        self.timed = bool(self.ms_per_token.any())

    def factor(self, latency_ref_ms: float) -> np.ndarray:
        """The latency factor of `ttft_ms` (the estimate whenever nobody has to wait)."""
        cached = self._factors.get(latency_ref_ms)
        if cached is None:
            cached = self._factors[latency_ref_ms] = closeness(self.ttft_ms, latency_ref_ms)
        return cached


@dataclass(frozen=True, slots=True)
class WeightedColumns:
    """The factors that do not depend on the request, for one `Weights`: the power factor and the
    weighted terms (kept apart so the weighted sum adds terms in `FACTORS` order, as the reference)."""

    power: np.ndarray
    power_term: np.ndarray
    idle_load_term: np.ndarray  # the load term where nothing is in flight or queued
    thermal_term: np.ndarray
    noise_term: np.ndarray
    priority_term: np.ndarray
    health_term: np.ndarray


@dataclass(frozen=True, slots=True)
class RowLists:
    """The fleet's columns that `scalar.py` reads, as Python lists: reading one element of a list
    costs a fraction of reading one of a numpy array, and a small fleet's decision reads them one by one."""

    exclusion: list[int]
    power_watts: list[float]
    avg_latency_ms: list[float]
    service_ms: list[float]  # the configured guess of the slot hold time
    max_concurrent: list[int]
    thermal: list[float]
    noise: list[float]
    priority: list[float]
    health: list[float]
    critical: list[bool]


@dataclass(frozen=True, slots=True)
class ModelLists:
    """`ModelColumns` as Python lists (see `RowLists`)."""

    exclusion: list[int]
    eligible: list[int]
    may_have: list[bool]
    nowhere: bool
    resident: list[float]
    context: list[float]


class Fleet:
    """Columns of every backend's slow-changing facts, in the order of `views`."""

    def __init__(self, views: Sequence[BackendView], learned: LearnedLatency | None = None) -> None:
        self.views = tuple(views)
        self.ids = tuple(v.id for v in self.views)
        self.index = {bid: i for i, bid in enumerate(self.ids)}
        self.id_array = np.array(self.ids, dtype=object)
        self.learned = learned if learned is not None else _ViewLatency(self.views)
        views = self.views
        self.power_watts = _column([v.power_watts for v in views])
        self.avg_latency_ms = _column([v.avg_latency_ms for v in views])
        self.max_concurrent = np.array([v.max_concurrent for v in views], dtype=np.int64)
        # A request waits once `max_concurrent` are ahead of it: ahead - slack > 0.
        self.slack = self.max_concurrent - 1
        self.exclusion = np.array([DISABLED if not v.enabled else UNHEALTHY if not v.healthy
                                   else BREAKER_OPEN if v.breaker is BreakerState.OPEN
                                   else ELIGIBLE for v in views], dtype=np.int8)
        self.enabled = np.array([v.enabled for v in views], dtype=bool)
        self.critical = np.array([v.thermal.level is ThermalLevel.CRITICAL for v in views], dtype=bool)
        self.any_critical = bool(self.critical.any())
        self.ones = np.ones(len(views))
        self.thermal = _column([1.0 - THERMAL_PENALTY[v.thermal.level] for v in views])
        self.noise = _column([_QUIET.get(v.hardware, _QUIET["other"]) * (0.5 if v.thermal.level in _HOT else 1.0)
                             for v in views])
        # Relative to the fleet's highest, so any small scale (the seed's 0-3) spans the factor.
        top = max((v.priority for v in views), default=0)
        self.one_priority = all(v.priority == top for v in views)  # then priority never breaks a tie
        self.priority = _column([v.priority / top if top else 1.0 for v in views])
        self.health = _column([_HEALTH.get(v.breaker, 0.0) for v in views])
        self._configured_latency = LatencyColumns(0, self.avg_latency_ms, default_service_ms(self.avg_latency_ms),
                                                  np.full(len(views), DEFAULT_LOAD_MS), np.zeros(len(views)))
        self._models: dict[str | None, ModelColumns] = {}
        self._model_lists: dict[str | None, ModelLists] = {}
        self._power_lists: dict[int, tuple[Weights, list[float]]] = {}
        self._latency: dict[tuple[str, SampleKind], LatencyColumns] = {}
        self._weighted: dict[int, tuple[Weights, WeightedColumns]] = {}
        self._ready: dict[tuple[str, SampleKind, int | None],
                          tuple[LatencyColumns, np.ndarray, np.ndarray, float]] = {}
        # Selection's weighted totals with nothing in flight, per (id of the weights, model, kind,
        # context); an entry holds what it was computed from, so a changed input is seen by identity.
        self.idle_totals: dict[tuple[int, str | None, SampleKind, int | None],
                               tuple[Weights, np.ndarray, np.ndarray, np.ndarray]] = {}
        # Selection's last ranking, with the arrays (totals, estimates, eligible rows) and the rules
        # it was read from: the next decision with the same ones ranks alike.
        self.last_ranking: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], tuple[bool, float],
                                 tuple[list[int], list[str], int]] | None = None

    def __len__(self) -> int:
        return len(self.views)

    def for_model(self, model: str | None) -> ModelColumns:
        cols = self._models.get(model)
        if cols is None:
            cols = self._models[model] = self._model_columns(model)
        return cols

    @cached_property
    def lists(self) -> RowLists:
        return RowLists(self.exclusion.tolist(), self.power_watts.tolist(), self.avg_latency_ms.tolist(),
                        self._configured_latency.service_ms.tolist(), self.max_concurrent.tolist(),
                        self.thermal.tolist(), self.noise.tolist(), self.priority.tolist(), self.health.tolist(),
                        self.critical.tolist())

    def model_lists(self, model: str | None) -> ModelLists:
        cached = self._model_lists.get(model)
        if cached is None:
            cols = self.for_model(model)
            cached = self._model_lists[model] = ModelLists(cols.exclusion.tolist(), cols.eligible.tolist(),
                                                           cols.may_have.tolist(),
                                                           cols.nowhere, cols.resident.tolist(), cols.context.tolist())
        return cached

    def power_factor(self, w: Weights) -> list[float]:
        """`weighted(w).power` as a list (see `RowLists`)."""
        cached = self._power_lists.get(id(w))
        if cached is None or cached[0] is not w:
            cached = self._power_lists[id(w)] = (w, self.weighted(w).power.tolist())
        return cached[1]

    def latency(self, model: str | None, kind: SampleKind = SampleKind.GENERATION) -> LatencyColumns:
        """Time to first token, slot hold time, load time and time per reply token per row: learned
        for `model` and `kind` where observed, else the configured guess (re-read only when the
        learned numbers for `model` have changed)."""
        if model is None:
            return self._configured_latency
        revision = self.learned.revision(model)
        key = (model, kind)
        cached = self._latency.get(key)
        if cached is None:
            cached = self._latency[key] = self._latency_column(model, kind, revision)
        elif cached.revision != revision:
            # Usually one backend has finished a request since: update its row, not the column.
            changed = self.learned.changed_since(model, cached.revision)
            rows = [self.index[b] for b in changed if b in self.index] if changed is not None else None
            cached = self._latency[key] = (self._latency_rows(model, kind, revision, cached, rows)
                                           if rows is not None and len(rows) <= len(self.ids) // 4
                                           else self._latency_column(model, kind, revision))
        return cached

    def typical_reply_tokens(self, model: str) -> float | None:
        return self.learned.typical_reply_tokens(model)

    def _latency_column(self, model: str, kind: SampleKind, revision: int) -> LatencyColumns:
        stats = self.learned.column(self.ids, model, kind)
        base, service = zip(*map(self._latency_of, stats, range(len(self.ids))), strict=True)
        loads = [DEFAULT_LOAD_MS if ms is None else ms for ms in self.learned.load_column(self.ids, model)]
        return LatencyColumns(revision, _column(base), _column(service), _column(loads),
                              _column([ms_per_token(s) for s in stats]))

    def _latency_rows(self, model: str, kind: SampleKind, revision: int, old: LatencyColumns,
                      rows: list[int]) -> LatencyColumns:
        # Copies: a decision already made may still read the old columns through its scores.
        ttft, service, load = old.ttft_ms.copy(), old.service_ms.copy(), old.load_ms.copy()
        per_token = old.ms_per_token.copy()
        ids = [self.ids[r] for r in rows]
        for row, stats, ms in zip(rows, self.learned.column(ids, model, kind), self.learned.load_column(ids, model),
                                  strict=True):
            ttft[row], service[row] = self._latency_of(stats, row)
            load[row] = DEFAULT_LOAD_MS if ms is None else ms
            per_token[row] = ms_per_token(stats)
        return LatencyColumns(revision, ttft, service, load, per_token)

    def _latency_of(self, stats: LatencyStats | None, row: int) -> tuple[float, float]:
        if stats is None:
            return self.avg_latency_ms.item(row), self._configured_latency.service_ms.item(row)
        return stats.ttft_ms, stats.service_ms

    def ready(self, model: str, context_tokens: int | None, kind: SampleKind = SampleKind.GENERATION,
              reply_tokens: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(fits, time until answered with the load where it does not fit and `reply_tokens` at the
        learned speed) per row, nobody waiting; kept until the learned numbers for `model` change."""
        latency = self.latency(model, kind)
        key = (model, kind, context_tokens)
        cached = self._ready.get(key)
        if cached is None or cached[0] is not latency or cached[3] != reply_tokens:
            fits = self.for_model(model).fits(context_tokens)
            ready = latency.ttft_ms + (1.0 - fits) * latency.load_ms
            if reply_tokens:
                ready = ready + reply_tokens * latency.ms_per_token
            cached = self._ready[key] = (latency, fits, ready, reply_tokens)
        return cached[1], cached[2]

    def weighted(self, w: Weights) -> WeightedColumns:
        # Keyed by identity (weights come from a small cache), checked so a recycled id cannot alias.
        cached = self._weighted.get(id(w))
        if cached is None or cached[0] is not w:
            power = closeness(self.power_watts, w.power_ref_w)
            cached = self._weighted[id(w)] = (w, WeightedColumns(
                power, w.power * power, w.load * self.ones, w.thermal * self.thermal,
                w.noise * self.noise, w.priority * self.priority, w.health * self.health))
        return cached[1]

    def _model_columns(self, model: str | None) -> ModelColumns:
        n = len(self.views)
        if model is None:
            return ModelColumns(self.exclusion, (self.exclusion == ELIGIBLE).nonzero()[0], np.ones(n, dtype=bool),
                                False, np.ones(n), np.full(n, np.inf))
        has = [v.has_model(model) for v in self.views]
        # Lenient with backends that have not reported their models only while no backend is known
        # to have the model: at start-up every list is empty, and refusing then would be wrong.
        lenient = not any(h is True and v.enabled for h, v in zip(has, self.views, strict=True))
        own = np.array([NO_MODEL if h is False else NOT_REPORTED if h is None and not lenient else ELIGIBLE
                        for h in has], dtype=np.int8)
        exclusion = np.where(self.exclusion != ELIGIBLE, self.exclusion, own)
        context = [v.loaded.get(model, -np.inf) for v in self.views]
        return ModelColumns(
            exclusion=exclusion,
            eligible=(exclusion == ELIGIBLE).nonzero()[0],
            may_have=np.array([h is not False for h in has], dtype=bool),
            nowhere=all(h is False for h in has),
            resident=np.array([model in v.loaded for v in self.views], dtype=np.float64),
            context=np.array([np.inf if c is None else c for c in context], dtype=np.float64),
        )


def _column(values: Sequence[float]) -> np.ndarray:
    return np.array(values, dtype=np.float64)
