"""Prometheus metrics at `GET /metrics`.

Two request figures are counted as requests finish (a cached label child each, so the hot path
pays a dictionary lookup and an addition); everything else — backend health, breakers, queues,
loaded contexts, sizing and truncation counts — is read from the live objects when Prometheus
scrapes, so it costs nothing per request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from ollama_proxy.service.context import ContextService
from ollama_proxy.service.pool import BackendPool
from ollama_proxy.service.router import Router

_PRIORITIES = ("best-effort", "normal", "high", "critical")
# Proxy overhead is sub-millisecond, generation can take minutes: buckets span both.
_DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    def __init__(self, pool: BackendPool, router: Router, context: ContextService) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter("ollama_proxy_requests", "Requests answered, by backend and HTTP status.",
                                 ["backend", "status"], registry=self.registry)
        self._duration = Histogram("ollama_proxy_request_duration_seconds",
                                   "Time from request to the end of the response, by backend.", ["backend"],
                                   buckets=_DURATION_BUCKETS, registry=self.registry)
        self._failures = Counter("ollama_proxy_failures", "Requests that failed after they were answered or "
                                 "that the proxy could not handle, by kind (stream_broken, internal_error).",
                                 ["kind"], registry=self.registry)
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._state = _StateCollector(pool, router, context)
        self.registry.register(self._state)

    def follow(self, pool: BackendPool, router: Router, context: ContextService) -> None:
        """Report the parts a configuration reload put in place (the counters carry on)."""
        self._state.pool, self._state.router, self._state.context = pool, router, context

    def observe(self, backend: str, status: int, seconds: float) -> None:
        children = self._children.get((backend, status))
        if children is None:
            children = self._children[(backend, status)] = (
                self._requests.labels(backend, str(status)), self._duration.labels(backend))
        children[0].inc()
        children[1].observe(seconds)

    def count_failure(self, kind: str) -> None:
        self._failures.labels(kind).inc()

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


class _StateCollector(Collector):
    def __init__(self, pool: BackendPool, router: Router, context: ContextService) -> None:
        self.pool = pool
        self.router = router
        self.context = context

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ollama_proxy_backend_up", "1 if the backend answered its last health check.",
                               labels=["backend"])
        breaker = GaugeMetricFamily("ollama_proxy_backend_breaker_open", "1 while the backend's breaker is open.",
                                    labels=["backend"])
        in_flight = GaugeMetricFamily("ollama_proxy_backend_in_flight", "Requests running on the backend.",
                                      labels=["backend"])
        queued = GaugeMetricFamily("ollama_proxy_backend_queued", "Requests waiting for the backend, by priority.",
                                   labels=["backend", "priority"])
        loaded = GaugeMetricFamily("ollama_proxy_loaded_context_tokens",
                                   "Context each loaded model runs with (from /api/ps).", labels=["backend", "model"])
        for status in self.router.backends_status():
            backend = status["id"]
            up.add_metric([backend], 1.0 if status["reachable"] else 0.0)
            breaker.add_metric([backend], 1.0 if status["breaker"] == "open" else 0.0)
            in_flight.add_metric([backend], float(status["in_flight"]))
            for priority in _PRIORITIES:
                queued.add_metric([backend, priority], float(status["queue"][priority]))
            for entry in status["loaded"]:
                loaded.add_metric([backend, entry["model"]], float(entry["context_length"]))
        yield from (up, breaker, in_flight, queued, loaded)
        stats = self.context.stats()
        yield CounterMetricFamily("ollama_proxy_context_decisions", "num_ctx sizing decisions made.",
                                  value=stats["decisions"])
        yield CounterMetricFamily("ollama_proxy_truncations_detected",
                                  "Responses where Ollama evaluated clearly fewer prompt tokens than were sent.",
                                  value=stats["truncations_detected"])
