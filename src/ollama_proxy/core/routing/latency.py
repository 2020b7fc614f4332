"""Learned latency per backend and model, and the latency estimate selection uses.

The configured `avg_latency_ms` is a guess made once; what a backend really does depends on the
model, so every finished request updates moving averages of time to first token, generation speed
and slot hold time for its (backend, model) pair. Once a pair has been observed its numbers replace
the static guess. Cold loads are taken out of the samples: whether a model is resident is scored
separately (`select.py`), and a few seconds of load time would poison the average for minutes.

Pure: the pool feeds observations in and copies `LatencyBook.for_backend` into each `BackendView`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ollama_proxy.core.admission import Priority
from ollama_proxy.core.ollama_api import canonical_model
from ollama_proxy.core.routing.state import BackendView, LatencyStats

DEFAULT_ALPHA = 0.3
# Slot hold time assumed before any request on the backend has finished.
DEFAULT_SERVICE_MS = 3_000.0


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
        return stats

    def get(self, backend_id: str, model: str) -> LatencyStats | None:
        return self._stats.get(backend_id, {}).get(canonical_model(model))

    def for_backend(self, backend_id: str) -> dict[str, LatencyStats]:
        return dict(self._stats.get(backend_id, {}))

    def forget(self, backend_id: str) -> None:
        """Drop what was learned, e.g. after the backend's hardware or config changed."""
        self._stats.pop(backend_id, None)


def estimate_latency_ms(view: BackendView, model: str | None,
                        priority: Priority = Priority.NORMAL) -> float:
    """Expected time to first token for a new request: learned or static latency plus queue wait.

    The wait counts the requests that would start before this one: those in flight and those
    queued at the same or a higher priority, drained `max_concurrent` at a time.
    """
    stats = view.latency.get(model) if model is not None else None
    base = stats.ttft_ms if stats is not None else view.avg_latency_ms
    ahead = view.in_flight + sum(view.queued[priority:]) - view.max_concurrent + 1
    if ahead <= 0:
        return base
    service_ms = stats.service_ms if stats is not None else max(DEFAULT_SERVICE_MS, base)
    return base + ahead / view.max_concurrent * service_ms
