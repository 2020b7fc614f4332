"""The request counter and duration histogram, counted in plain numbers (`metrics._Answered`), are written
out exactly as prometheus_client's own Counter and Histogram write the same observations."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from ollama_proxy.adapters.http.metrics import _DURATION_BUCKETS, _Answered


def _exposition(registry: CollectorRegistry) -> list[str]:
    # prometheus_client's metrics add `_created` samples (their creation time): ours have none.
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_the_answered_requests_read_as_prometheus_clients_counter_and_histogram() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    answered = _Answered()
    ours.register(answered)
    requests = Counter("ollama_proxy_requests", "Requests answered, by backend and HTTP status.", ["backend", "status"],
                       registry=theirs)
    durations = Histogram("ollama_proxy_request_duration_seconds",
                          "Time from request to the end of the response, by backend.", ["backend"],
                          buckets=_DURATION_BUCKETS, registry=theirs)
    rng = random.Random(0)
    # Every bound itself, just past it, and random times up to past the last bound.
    seconds = [*_DURATION_BUCKETS, *(b * 1.000001 for b in _DURATION_BUCKETS),
               *(rng.uniform(0, 400) for _ in range(200)), 0.0]
    for second in seconds:
        backend, status = rng.choice(["sim", "gpu", "-"]), rng.choice([200, 200, 404, 499, 503])
        answered.observe(backend, status, second)
        requests.labels(backend, str(status)).inc()
        durations.labels(backend).observe(second)
    assert _exposition(ours) == _exposition(theirs)
    assert any('ollama_proxy_request_duration_seconds_bucket{backend="sim",le="+Inf"}' in line
               for line in _exposition(ours))
