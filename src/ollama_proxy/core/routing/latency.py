"""Learned latency per backend and model, what counts as a sample, and the estimate selection uses.

The configured `avg_latency_ms` is a guess made once; what a backend really does depends on the
model, so every finished inference updates moving averages of time to first token, generation speed
and slot hold time for its (backend, model) pair, and each request that made Ollama load the model
updates that pair's load time. Once a pair has been observed its numbers replace the static guess.

Only real work is a sample (`sample_kind`). Ollama answers a load-only call (`ollama run`'s bare
`{"model": m}`, an empty prompt or message list) and an unload (`keep_alive: 0` with nothing to
answer) at once, with `done_reason` `load`/`unload`: taken as first-token times, a few of them made a
2000 ms CPU look like the fastest backend. Embeddings are learned apart from generation (a chat
model can embed, far faster than it answers), and management calls teach nothing.

A request that loaded is timed without its load (`load_duration`, Ollama's own figure): the load
is learned on its own and charged by selection only where the model is not resident.

The estimate of a generation includes producing its reply: the expected length (the request's own
`num_predict` / `max_tokens`, else the model's typical reply length learned from `eval_count`, else
`DEFAULT_REPLY_TOKENS`) over the backend's learned tokens per second. A backend whose speed for the
model has not been learned yet is charged no generation time: its configured `avg_latency_ms` is
the whole guess, as before anything is learned.

Pure: the router feeds observations in; selection reads the book through `revision`, `column` and
`load_column` (see `fleet.py`), or copies of `for_backend` and `loads_for` in a `BackendView`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np

from ollama_proxy.core.admission import Priority
from ollama_proxy.core.ollama_api import canonical_model
from ollama_proxy.core.operations import Operation
from ollama_proxy.core.routing.state import BackendView, LatencyStats, SampleKind

DEFAULT_ALPHA = 0.3
# Slot hold time assumed before any request on the backend has finished.
DEFAULT_SERVICE_MS = 3_000.0
# Load time assumed where none was learned: a small model from the page cache takes about a second.
DEFAULT_LOAD_MS = 1_000.0
# Ollama reports time spent getting a runner: more than a blink means the model was loaded.
LOAD_NOTICEABLE_MS = 50.0
# The reply length expected from a model before any of its replies was seen: a few paragraphs.
DEFAULT_REPLY_TOKENS = 256
# How many recent changes per model the book remembers, so a reader can catch up row by row.
_CHANGE_LOG = 64

_Number = TypeVar("_Number", float, np.ndarray)


def sample_kind(operation: Operation, body: Mapping[str, Any] | None,
                final: Mapping[str, Any] | None) -> SampleKind | None:
    """What a finished call may teach about serving speed: None for load and unload calls and for
    anything that is not inference. (A prompt sent with `keep_alive: 0` is answered in full before
    the unload, so it is real work.)"""
    if not operation.runs_model:
        return None
    if operation is Operation.EMBED or operation is Operation.EMBEDDINGS:
        return SampleKind.EMBEDDING
    if final is not None and final.get("done_reason") in ("load", "unload"):
        return None
    if body is not None and ((operation is Operation.GENERATE and not body.get("prompt"))
                             or (operation is Operation.CHAT and not body.get("messages"))):
        return None
    return SampleKind.GENERATION


def operation_kind(operation: Operation) -> SampleKind:
    """Which learned speeds estimate a call of `operation`."""
    # Identity tests: a set lookup would hash the member in Python (Enum.__hash__), on every request.
    return SampleKind.EMBEDDING if operation is Operation.EMBED or operation is Operation.EMBEDDINGS \
        else SampleKind.GENERATION


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
    """Moving averages for every (backend, model, kind) seen, load times per (backend, model), and
    the typical reply length per model (a property of the model and its users, not of the backend)."""

    alpha: float = DEFAULT_ALPHA
    _stats: dict[str, dict[tuple[str, SampleKind], LatencyStats]] = field(default_factory=dict)
    _loads: dict[str, dict[str, float]] = field(default_factory=dict)
    _replies: dict[str, float] = field(default_factory=dict)
    # Per canonical model, bumped by every change to any backend's numbers for it: selection caches
    # a column per model and re-reads it only when this moves.
    _revisions: dict[str, int] = field(default_factory=dict)
    _changes: dict[str, deque[tuple[int, str]]] = field(default_factory=dict)  # (revision, backend id)

    def observe(self, backend_id: str, model: str, *, ttft_ms: float, total_ms: float,
                tokens_per_s: float | None = None, load_ms: float = 0.0,
                kind: SampleKind = SampleKind.GENERATION, reply_tokens: int | None = None) -> LatencyStats | None:
        """Record one finished piece of real work (see `sample_kind`).

        `ttft_ms` and `total_ms` are wall-clock times measured by the proxy; `tokens_per_s` is best
        taken from Ollama's `eval_count / eval_duration`; `load_ms` is its `load_duration`;
        `reply_tokens` its `eval_count` (a generation's reply length, learned per model). A load
        is learned as such and taken out of both times; a load longer than the wall-clock time
        (a clock that does not match the proxy's, as a sped-up simulator's) leaves no sample but the
        load. Returns the updated stats, None when only the load was learned.
        """
        key = canonical_model(model)
        if reply_tokens is not None and kind is SampleKind.GENERATION:
            prev = self._replies.get(key)
            self._replies[key] = reply_tokens if prev is None else prev + self.alpha * (reply_tokens - prev)
        if load_ms >= LOAD_NOTICEABLE_MS:
            self.observe_load(backend_id, key, load_ms)
            if load_ms > ttft_ms:
                return None
            ttft_ms, total_ms = ttft_ms - load_ms, max(0.0, total_ms - load_ms)
        per_backend = self._stats.setdefault(backend_id, {})
        stats = updated(per_backend.get((key, kind)), ttft_ms=max(0.0, ttft_ms), total_ms=max(0.0, total_ms),
                        tokens_per_s=tokens_per_s, alpha=self.alpha)
        per_backend[(key, kind)] = stats
        self._bump(key, backend_id)
        return stats

    def observe_load(self, backend_id: str, model: str, load_ms: float) -> float:
        """Record how long loading `model` took (Ollama's `load_duration`)."""
        key = canonical_model(model)
        loads = self._loads.setdefault(backend_id, {})
        prev = loads.get(key)
        loads[key] = learned = load_ms if prev is None else prev + self.alpha * (load_ms - prev)
        self._bump(key, backend_id)
        return learned

    def get(self, backend_id: str, model: str, kind: SampleKind = SampleKind.GENERATION) -> LatencyStats | None:
        return self._stats.get(backend_id, {}).get((canonical_model(model), kind))

    def load_ms(self, backend_id: str, model: str) -> float | None:
        return self._loads.get(backend_id, {}).get(canonical_model(model))

    def typical_reply_tokens(self, model: str) -> float | None:
        """The moving average of canonical `model`'s reply lengths; None before its first reply."""
        return self._replies.get(model)

    def for_backend(self, backend_id: str, kind: SampleKind = SampleKind.GENERATION) -> dict[str, LatencyStats]:
        """Per model, the stats of one kind of work."""
        return {model: stats for (model, k), stats in self._stats.get(backend_id, {}).items() if k is kind}

    def loads_for(self, backend_id: str) -> dict[str, float]:
        return dict(self._loads.get(backend_id, {}))

    def forget(self, backend_id: str) -> None:
        """Drop what was learned, e.g. after the backend's hardware or config changed."""
        models = {m for m, _ in self._stats.pop(backend_id, {})} | set(self._loads.pop(backend_id, {}))
        for model in models:
            self._bump(model, backend_id)

    def revision(self, model: str) -> int:
        """A number that changes whenever any backend's numbers for canonical `model` change."""
        return self._revisions.get(model, 0)

    def changed_since(self, model: str, revision: int) -> set[str] | None:
        """The backends whose numbers for `model` changed after `revision`; None when that is further
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

    def column(self, backend_ids: Sequence[str], model: str,
               kind: SampleKind = SampleKind.GENERATION) -> list[LatencyStats | None]:
        """The stats of `kind` for canonical `model` on each backend, in the order given (None: not
        observed). The other kind never stands in: an embedding says nothing of how fast a chat is."""
        empty: dict[tuple[str, SampleKind], LatencyStats] = {}
        key = (model, kind)
        return [self._stats.get(b, empty).get(key) for b in backend_ids]

    def load_column(self, backend_ids: Sequence[str], model: str) -> list[float | None]:
        empty: dict[str, float] = {}
        return [self._loads.get(b, empty).get(model) for b in backend_ids]

    def _bump(self, model: str, backend_id: str) -> None:
        revision = self._revisions[model] = self._revisions.get(model, 0) + 1
        self._changes.setdefault(model, deque(maxlen=_CHANGE_LOG)).append((revision, backend_id))


def estimate_latency_ms(view: BackendView, model: str | None, priority: Priority = Priority.NORMAL,
                        context_tokens: int | None = None, kind: SampleKind = SampleKind.GENERATION,
                        reply_tokens: float = DEFAULT_REPLY_TOKENS) -> float:
    """Expected time until a new request is answered: queue wait, the load where the model is not
    resident at a context that fits, the learned or static first-token time, and for a generation
    `reply_tokens` at the learned speed.

    The wait counts the requests that would start before this one: those in flight and those
    queued at the same or a higher priority, drained `max_concurrent` at a time.
    """
    learned = view.latency if kind is SampleKind.GENERATION else view.embedding_latency
    stats = learned.get(model) if model is not None else None
    base = stats.ttft_ms if stats is not None else view.avg_latency_ms
    service_ms = stats.service_ms if stats is not None else default_service_ms(base)
    ready = base if model is None or view.fits(model, context_tokens) else base + view.load_ms.get(model,
                                                                                                   DEFAULT_LOAD_MS)
    if kind is SampleKind.GENERATION:
        ready += reply_tokens * ms_per_token(stats)
    return float(with_queue_wait(ready, service_ms, view.in_flight + sum(view.queued[priority:]), view.max_concurrent))


def ms_per_token(stats: LatencyStats | None) -> float:
    """Generation time per reply token; 0 where the speed was not learned (nothing is charged)."""
    return 1000.0 / stats.tokens_per_s if stats is not None and stats.tokens_per_s else 0.0


def expected_reply_tokens(asked: int | None, typical: float | None) -> float:
    """The reply length a generation is estimated for: what it asked for, else the model's typical one."""
    if asked is not None:
        return float(asked)
    return DEFAULT_REPLY_TOKENS if typical is None else typical


def default_service_ms(base_ms: _Number) -> _Number:
    """Slot hold time assumed where none was learned: at least as long as the first token takes."""
    # Any: numpy's result type does not follow the TypeVar (a float in, a numpy float out).
    result: Any = np.maximum(DEFAULT_SERVICE_MS, base_ms)
    return cast(_Number, result)


def queue_wait(service_ms: _Number, ahead: _Number, max_concurrent: _Number) -> _Number:
    """The wait behind `ahead` requests (in flight and queued before this one), which drain
    `max_concurrent` at a time. Works on numbers and elementwise on numpy arrays alike."""
    beyond = ahead - max_concurrent + 1
    result: Any = np.where(beyond > 0, beyond / max_concurrent * service_ms, 0.0)
    return cast(_Number, result)


def with_queue_wait(base_ms: _Number, service_ms: _Number, ahead: _Number, max_concurrent: _Number) -> _Number:
    """`base_ms` plus `queue_wait`."""
    result: Any = base_ms + queue_wait(service_ms, ahead, max_concurrent)
    return cast(_Number, result)
