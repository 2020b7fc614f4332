"""Multi-backend routing decisions: backend snapshots, breaker, learned latency, selection, headers.

Pure: the async backend pool owns live state and I/O and calls into this package with values.
"""

from __future__ import annotations

from ollama_proxy.core.routing.breaker import CircuitBreaker, Outcome, classify_status
from ollama_proxy.core.routing.headers import decision_headers, parse_route_headers
from ollama_proxy.core.routing.latency import LatencyBook, estimate_latency_ms
from ollama_proxy.core.routing.select import BackendScore, RoutingDecision, select_backend
from ollama_proxy.core.routing.state import (
    BackendView,
    BreakerState,
    LatencyStats,
    RouteRequest,
    ThermalLevel,
    ThermalState,
    normalise_model,
)
from ollama_proxy.core.routing.weights import MODE_WEIGHTS, Weights, weights_for

__all__ = [
    "MODE_WEIGHTS",
    "BackendScore",
    "BackendView",
    "BreakerState",
    "CircuitBreaker",
    "LatencyBook",
    "LatencyStats",
    "Outcome",
    "RouteRequest",
    "RoutingDecision",
    "ThermalLevel",
    "ThermalState",
    "Weights",
    "classify_status",
    "decision_headers",
    "estimate_latency_ms",
    "normalise_model",
    "parse_route_headers",
    "select_backend",
    "weights_for",
]
