"""Counters the simulator keeps so tests can assert what happened (`GET /sim/stats`).

Plain bookkeeping: the scheduler, handlers and middleware add to it; nothing here acts on it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class SimStats:
    requests: Counter[str] = field(default_factory=Counter)
    loads: Counter[str] = field(default_factory=Counter)
    reloads: Counter[str] = field(default_factory=Counter)
    unloads: Counter[str] = field(default_factory=Counter)
    truncations: Counter[str] = field(default_factory=Counter)
    busy_rejections: int = 0
    # Requests whose client went away before the answer was complete.
    cancelled: int = 0
    # The most requests one model served at the same time (checks num_parallel).
    peak_in_flight: Counter[str] = field(default_factory=Counter)
    last_body: dict[str, Any] = field(default_factory=dict)
    # Headers of the last request per path, as they arrived (lower-cased names): shows what a proxy forwards.
    last_headers: dict[str, dict[str, str]] = field(default_factory=dict)
    # Options as they reached the model, after the /v1 layer's translation.
    last_options: dict[str, Any] | None = None
    last_options_by_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Prompt tokens before and after truncation, per model, of the last inference request.
    last_prompt: dict[str, dict[str, int]] = field(default_factory=dict)

    def record_options(self, model: str, options: dict[str, Any]) -> None:
        self.last_options = dict(options)
        self.last_options_by_model[model] = dict(options)

    def snapshot(self, loaded: dict[str, dict[str, Any]], faults_triggered: int) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "requests_total": sum(self.requests.values()),
            "loads": sum(self.loads.values()),
            "reloads": sum(self.reloads.values()),
            "unloads": sum(self.unloads.values()),
            "truncations": sum(self.truncations.values()),
            "loads_by_model": dict(self.loads),
            "reloads_by_model": dict(self.reloads),
            "unloads_by_model": dict(self.unloads),
            "truncations_by_model": dict(self.truncations),
            "busy_rejections": self.busy_rejections,
            "cancelled": self.cancelled,
            "faults_triggered": faults_triggered,
            "peak_in_flight": dict(self.peak_in_flight),
            "loaded": loaded,
            "last_body": self.last_body,
            "last_headers": self.last_headers,
            "last_options": self.last_options,
            "last_options_by_model": self.last_options_by_model,
            "last_prompt": self.last_prompt,
        }
