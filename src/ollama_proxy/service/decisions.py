"""The recent routing and sizing decisions, for the status page and `ollama-proxy status`: what was asked,
where it went, the context chosen and why. The pipeline notes every call it ends; the log keeps the
last `limit` of them (a deque: constant memory, no work beyond one tuple per call; the dicts a
reader gets are built when read).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from ollama_proxy.core.admission import Priority
from ollama_proxy.core.context.sizing import SizeDecision
from ollama_proxy.core.operations import Dialect, Operation
from ollama_proxy.service.reply import Call, CallRecord


class DecisionLog:
    def __init__(self, limit: int = 100, *, wall_clock: Callable[[], float] = time.time,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._entries: deque[tuple[Any, ...]] = deque(maxlen=limit)
        # Since start, not just the last `limit`: requests routed per backend, and the latest one's backend.
        self.routed: Counter[str] = Counter()
        self.last_backend: str | None = None
        self._wall_clock = wall_clock
        self._clock = clock

    def note(self, call: Call, record: CallRecord, status: int, error: str | None = None) -> None:
        sizing, routing = record.sizing, record.routing
        if record.backend_id is not None:
            self.routed[record.backend_id] += 1
            self.last_backend = record.backend_id
        self._entries.append((
            self._wall_clock(), call.request_id, call.operation, call.dialect, call.model, call.hints.priority,
            record.backend_id, routing.reason if routing is not None else None, sizing, status, record.queued_ms,
            self._clock() - record.started, error or record.failure))

    def recent(self, count: int | None = None) -> list[dict[str, Any]]:
        """The newest first."""
        entries = list(reversed(self._entries))
        return [_entry(*entry) for entry in (entries if count is None else entries[:count])]


def _entry(at: float, request_id: str, operation: Operation, dialect: Dialect, model: str | None, priority: Priority,
           backend: str | None, routing_reason: str | None, sizing: SizeDecision | None, status: int,
           queued_ms: float, duration_s: float, error: str | None) -> dict[str, Any]:
    return {
        "at": round(at, 3),
        "request_id": request_id,
        "operation": operation.value,
        "dialect": dialect.value,
        "model": model,
        "priority": priority.label,
        "backend": backend,
        "routing_reason": routing_reason,
        "num_ctx": sizing.num_ctx if sizing is not None else None,
        "input_tokens": sizing.input_tokens if sizing is not None else None,
        "sizing_reason": sizing.reason.value if sizing is not None else None,
        "status": status,
        "queued_ms": round(queued_ms, 1),
        "duration_ms": round(duration_s * 1000, 1),
        "error": error,
    }
