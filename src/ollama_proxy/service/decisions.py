"""The recent routing and sizing decisions, for the status page and `ollama-proxy status`: what was asked,
where it went, the context chosen and why. The pipeline notes every call it ends; the log keeps the
last `limit` of them (a deque: constant memory, no work beyond one small dict per call).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from ollama_proxy.service.reply import Call, CallRecord


class DecisionLog:
    def __init__(self, limit: int = 100, *, wall_clock: Callable[[], float] = time.time,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=limit)
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
        self._entries.append({
            "at": round(self._wall_clock(), 3),
            "request_id": call.request_id,
            "operation": call.operation.value,
            "dialect": call.dialect.value,
            "model": call.model,
            "priority": call.hints.priority.label,
            "backend": record.backend_id,
            "routing_reason": routing.reason if routing is not None else None,
            "num_ctx": sizing.num_ctx if sizing is not None else None,
            "input_tokens": sizing.input_tokens if sizing is not None else None,
            "sizing_reason": sizing.reason.value if sizing is not None else None,
            "status": status,
            "queued_ms": round(record.queued_ms, 1),
            "duration_ms": round((self._clock() - record.started) * 1000, 1),
            "error": error or record.failure,
        })

    def recent(self, count: int | None = None) -> list[dict[str, Any]]:
        """The newest first."""
        entries = list(reversed(self._entries))
        return entries if count is None else entries[:count]
