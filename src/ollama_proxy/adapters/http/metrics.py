"""Prometheus metrics at `GET /metrics`.

Two request figures are counted as requests finish, in plain numbers (`_Answered`: a dictionary
lookup and three additions, where prometheus_client's counter and histogram take a lock per
value), and written out as a counter and a histogram when Prometheus scrapes; everything else —
backend health, breakers, queues, loaded contexts, sizing and truncation counts — is read from the
live objects then too, so it costs nothing per request.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ollama_proxy.service.context import ContextService
from ollama_proxy.service.pool import BackendPool
from ollama_proxy.service.router import Router

_PRIORITIES = ("best-effort", "normal", "high", "critical")
# Proxy overhead is sub-millisecond, generation can take minutes: buckets span both.
_DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    def __init__(self, pool: BackendPool, router: Router, context: ContextService) -> None:
        self.registry = CollectorRegistry()
        self._answered = _Answered()
        self.registry.register(self._answered)
        self._failures = Counter("ollama_proxy_failures", "Requests that failed after they were answered or "
                                 "that the proxy could not handle, by kind (stream_broken, internal_error).",
                                 ["kind"], registry=self.registry)
        self._state = _StateCollector(pool, router, context)
        self.registry.register(self._state)
        self.observe = self._answered.observe

    def follow(self, pool: BackendPool, router: Router, context: ContextService) -> None:
        """Report the parts a configuration reload put in place (the counters carry on)."""
        self._state.pool, self._state.router, self._state.context = pool, router, context

    def count_failure(self, kind: str) -> None:
        self._failures.labels(kind).inc()

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


class _Answered(Collector):
    """Requests answered, by backend and status, and their durations by backend: counted on the event
    loop as requests finish (every front counts on it, and Prometheus is answered on it too, so no
    lock), written out as prometheus_client's counter and histogram would write them."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, int], int] = {}
        # Per backend: observations per bucket of `_DURATION_BUCKETS` and one past the last (+Inf), then their sum.
        self._durations: dict[str, list[float]] = {}

    def observe(self, backend: str, status: int, seconds: float) -> None:
        """One request answered with `status` after `seconds`."""
        key = (backend, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        durations = self._durations.get(backend)
        if durations is None:
            durations = self._durations[backend] = [0.0] * (len(_DURATION_BUCKETS) + 2)
        durations[bisect_left(_DURATION_BUCKETS, seconds)] += 1  # the first bound at or above: `le`
        durations[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("ollama_proxy_requests", "Requests answered, by backend and HTTP status.",
                                       labels=["backend", "status"])
        for (backend, status), answered in self._requests.items():
            requests.add_metric([backend, str(status)], answered)
        yield requests
        durations = HistogramMetricFamily("ollama_proxy_request_duration_seconds",
                                          "Time from request to the end of the response, by backend.",
                                          labels=["backend"])
        for backend, counts in self._durations.items():
            cumulative, buckets = 0.0, []
            for bound, count in zip(_BUCKET_NAMES, counts, strict=False):
                cumulative += count
                buckets.append((bound, cumulative))
            durations.add_metric([backend], buckets, sum_value=counts[-1])
        yield durations


_BUCKET_NAMES = (*map(floatToGoString, _DURATION_BUCKETS), "+Inf")


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
