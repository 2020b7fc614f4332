"""Learned latency per backend and model, and the latency estimate selection uses.

The configured `avg_latency_ms` is a guess made once; what a backend really does depends on the
model, so every finished request updates moving averages of time to first token, generation speed
and slot hold time for its (backend, model) pair. Once a pair has been observed its numbers replace
the static guess. Cold loads are taken out of the samples: whether a model is resident is scored
separately (`select.py`), and a few seconds of load time would poison the average for minutes.

Pure: the pool feeds observations in; selection reads the book through `revision` and `column`
(see `fleet.py`), or a copy of `for_backend` in a `BackendView`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np

from ollama_proxy.core.admission import Priority
from ollama_proxy.core.ollama_api import canonical_model
from ollama_proxy.core.routing.state import BackendView, LatencyStats

DEFAULT_ALPHA = 0.3
# Slot hold time assumed before any request on the backend has finished.
DEFAULT_SERVICE_MS = 3_000.0
# How many recent changes per model the book remembers, so a reader can catch up row by row.
_CHANGE_LOG = 64

_Number = TypeVar("_Number", float, np.ndarray)


def updated(prev: LatencyStats | None, *, ttft_ms: float, total_ms: float,
            tokens_per_s: float | None = None, alpha: float = DEFAULT_ALPHA) -> LatencyStats:
    """Fold one observation into the moving averages; the first one is taken as is."""
    if ttft_ms < 0 or total_ms < 0 or (tokens_per_s is not None and tokens_per_s < 0):
        raise ValueError(f"latency observations must be >= 0, got ttft_ms={ttft_ms}, total_ms={total_ms}, "
                         f"tokens_per_s={tokens_per_s}")
    if prev is None:
        return LatencyStats(ttft_ms, tokens_per_s, total_ms, 1)
    tps = prev.tokens_per_s
    if tokens_per_s is not None:
        tps = tokens_per_s if tps is None else tps + alpha * (tokens_per_s - tps)
    return LatencyStats(
        ttft_ms=prev.ttft_ms + alpha * (ttft_ms - prev.ttft_ms),
        tokens_per_s=tps,
        service_ms=prev.service_ms + alpha * (total_ms - prev.service_ms),
        samples=prev.samples + 1,
    )


@dataclass(slots=True)
class LatencyBook:
    """Moving averages for every (backend, model) pair seen; owned by the backend pool."""

    alpha: float = DEFAULT_ALPHA
    _stats: dict[str, dict[str, LatencyStats]] = field(default_factory=dict)
    # Per canonical model, bumped by every change to any backend's stats for it: selection caches
    # a column per model and re-reads it only when this moves.
    _revisions: dict[str, int] = field(default_factory=dict)
    _changes: dict[str, deque[tuple[int, str]]] = field(default_factory=dict)  # (revision, backend id)

    def observe(self, backend_id: str, model: str, *, ttft_ms: float, total_ms: float,
                tokens_per_s: float | None = None, load_ms: float = 0.0) -> LatencyStats:
        """Record one finished request.

        `ttft_ms` and `total_ms` are wall-clock times measured by the proxy; `tokens_per_s` is best
        taken from Ollama's `eval_count / eval_duration`; `load_ms` is its `load_duration`, which is
        subtracted from both times.
        """
        per_model = self._stats.setdefault(backend_id, {})
        key = canonical_model(model)
        load_ms = max(0.0, load_ms)
        stats = updated(per_model.get(key), ttft_ms=max(0.0, ttft_ms - load_ms),
                        total_ms=max(0.0, total_ms - load_ms), tokens_per_s=tokens_per_s, alpha=self.alpha)
        per_model[key] = stats
        self._bump(key, backend_id)
        return stats

    def get(self, backend_id: str, model: str) -> LatencyStats | None:
        return self._stats.get(backend_id, {}).get(canonical_model(model))

    def for_backend(self, backend_id: str) -> dict[str, LatencyStats]:
        return dict(self._stats.get(backend_id, {}))

    def forget(self, backend_id: str) -> None:
        """Drop what was learned, e.g. after the backend's hardware or config changed."""
        for model in self._stats.pop(backend_id, {}):
            self._bump(model, backend_id)

    def revision(self, model: str) -> int:
        """A number that changes whenever any backend's stats for canonical `model` change."""
        return self._revisions.get(model, 0)

    def changed_since(self, model: str, revision: int) -> set[str] | None:
        """The backends whose stats for `model` changed after `revision`; None when that is further
        back than the book remembers (read the whole column again)."""
        if self._revisions.get(model, 0) == revision:
            return set()
        log = self._changes.get(model)
        if not log or log[0][0] > revision + 1:
            return None
        changed = set()
        for r, backend in reversed(log):  # newest first: stop at the first one already seen
            if r <= revision:
                break
            changed.add(backend)
        return changed

    def column(self, backend_ids: Sequence[str], model: str) -> list[LatencyStats | None]:
        """The stats for canonical `model` on each backend, in the order given (None: not observed)."""
        empty: dict[str, LatencyStats] = {}
        return [self._stats.get(b, empty).get(model) for b in backend_ids]

    def _bump(self, model: str, backend_id: str) -> None:
        revision = self._revisions[model] = self._revisions.get(model, 0) + 1
        self._changes.setdefault(model, deque(maxlen=_CHANGE_LOG)).append((revision, backend_id))


def estimate_latency_ms(view: BackendView, model: str | None,
                        priority: Priority = Priority.NORMAL) -> float:
    """Expected time to first token for a new request: learned or static latency plus queue wait.

    The wait counts the requests that would start before this one: those in flight and those
    queued at the same or a higher priority, drained `max_concurrent` at a time.
    """
    stats = view.latency.get(model) if model is not None else None
    base = stats.ttft_ms if stats is not None else view.avg_latency_ms
    service_ms = stats.service_ms if stats is not None else default_service_ms(base)
    return float(with_queue_wait(base, service_ms, view.in_flight + sum(view.queued[priority:]),
                                 view.max_concurrent))


def default_service_ms(base_ms: _Number) -> _Number:
    """Slot hold time assumed where none was learned: at least as long as the first token takes."""
    # Any: numpy's result type does not follow the TypeVar (a float in, a numpy float out).
    result: Any = np.maximum(DEFAULT_SERVICE_MS, base_ms)
    return cast(_Number, result)


def with_queue_wait(base_ms: _Number, service_ms: _Number, ahead: _Number, max_concurrent: _Number) -> _Number:
    """`base_ms` plus the wait behind `ahead` requests (in flight and queued before this one), which
    drain `max_concurrent` at a time. Works on numbers and elementwise on numpy arrays alike."""
    beyond = ahead - max_concurrent + 1
    result: Any = np.where(beyond > 0, base_ms + beyond / max_concurrent * service_ms, base_ms)
    return cast(_Number, result)
