"""The router keeps its columns between decisions: every fact they hold must refresh them when it
changes (models, residency, reachability, breaker events and clock, learned latency, thermal),
and what is read per request (in flight, queued) must never be stale."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from ollama_proxy.config.load import validate
from ollama_proxy.core.admission import Priority
from ollama_proxy.core.routing.breaker import Outcome
from ollama_proxy.core.routing.state import RouteRequest, ThermalLevel, ThermalState
from ollama_proxy.service.pool import Backend, BackendPool
from ollama_proxy.service.router import Router
from ollama_proxy.service.tasks import TaskSet
from ollama_proxy.testing.memory import MemoryTransport

MODEL = "llama3:latest"


def _router(n: int = 2) -> Router:
    """n identical backends that all report MODEL and are reachable."""
    config = validate({"backends": [
        {"id": f"b{i}", "hardware": "igpu", "endpoint": f"http://127.0.0.1:{21000 + i}",
         "characteristics": {"power_watts": 12, "avg_latency_ms": 400, "max_concurrent": 2}}
        for i in range(n)]})
    pool = BackendPool(config.backends, config.router, MemoryTransport(), TaskSet())
    for backend in pool:
        backend.reachable, backend.models = True, {MODEL}
    return Router(config, pool, rng=random.Random(0))


def _backend(router: Router, backend_id: str) -> Backend:
    backend = router.pool.get(backend_id)
    assert backend is not None
    return backend


def _pick(router: Router, **request: object) -> str:
    return router.decide(RouteRequest(model=MODEL, **request)).backend_id  # type: ignore[arg-type]


def _load_b0(router: Router) -> None:
    # Two in flight on b0 fill it; the idle b1 must win at once, without any revision bump.
    queue = _backend(router, "b0").gate.queue
    for k in range(2):
        queue.try_acquire(("busy", k), Priority.NORMAL, 0.0)


def _open_b0(router: Router) -> None:
    for _ in range(router.config.router.breaker_failures):
        router.pool.record(_backend(router, "b0"), Outcome.CONNECT_ERROR)


def _model_gone_from_b0(router: Router) -> None:
    _backend(router, "b0").models = {"other:latest"}


def _b0_unreachable(router: Router) -> None:
    _backend(router, "b0").reachable = False


def _b0_slow_learned(router: Router) -> None:
    router.observe_latency(_backend(router, "b0"), MODEL, ttft_ms=60_000, total_ms=90_000, final=None)


def _b1_resident(router: Router) -> None:
    # Only b1 has the model loaded: residency now sets them apart.
    _backend(router, "b1").loaded = {MODEL: 8192}


@pytest.mark.parametrize(("change", "expected"), [
    pytest.param(_load_b0, "b1", id="in-flight-is-read-per-request"),
    pytest.param(_open_b0, "b1", id="breaker-opens"),
    pytest.param(_model_gone_from_b0, "b1", id="model-list-changes"),
    pytest.param(_b0_unreachable, "b1", id="backend-unreachable"),
    pytest.param(_b0_slow_learned, "b1", id="learned-latency"),
    pytest.param(_b1_resident, "b1", id="model-loaded"),
])
def test_a_change_reaches_the_next_decision(change: Callable[[Router], None], expected: str) -> None:
    router = _router()
    before = router.decide(RouteRequest(model=MODEL))
    assert before.reason.startswith("mode-balanced; near-tie of 2")  # identical twins, so the change decides
    change(router)
    assert {_pick(router) for _ in range(20)} == {expected}


def test_columns_are_reused_while_nothing_changes() -> None:
    router = _router()
    now = time.monotonic()
    fleet = router.fleet(now)
    _backend(router, "b0").models = {MODEL}  # the same value again: no change
    _backend(router, "b1").loaded = {}
    router.pool.record(_backend(router, "b0"), Outcome.SUCCESS)
    assert router.fleet(now) is fleet
    _backend(router, "b1").loaded = {MODEL: 4096}
    assert router.fleet(now) is not fleet


def test_breaker_turns_half_open_by_the_clock_alone() -> None:
    router = _router()
    _open_b0(router)
    now = time.monotonic()
    assert router.fleet(now).views[0].breaker == "open"
    later = now + router.config.router.breaker_reset_s + 1
    assert router.fleet(later).views[0].breaker == "half-open"


@dataclass
class _Monitor:
    """Just what the router reads of a `SystemMonitor`: a sample that changes identity."""

    snapshot: object = None
    auto_state: None = None


def test_a_new_thermal_sample_refreshes_the_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    router = _router()
    router.monitor = _Monitor(object())  # type: ignore[assignment]
    states = {"b0": ThermalState(ThermalLevel.CRITICAL, 99.0, "trip point")}
    monkeypatch.setattr(router, "thermal", lambda b: states.get(b.id, ThermalState()))
    assert _pick(router) == "b1"
    states.clear()
    assert router.decide(RouteRequest(model=MODEL)).excluded  # same sample: still spared
    router.monitor.snapshot = object()  # type: ignore[union-attr]
    assert not router.decide(RouteRequest(model=MODEL)).excluded


def test_latency_rows_follow_many_completions() -> None:
    """Past the book's change log the whole column is re-read; either way the numbers are current."""
    router = _router(8)
    fleet = router.fleet(time.monotonic())
    for k in range(100):
        router.observe_latency(_backend(router, f"b{k % 8}"), MODEL, ttft_ms=10.0 * k, total_ms=1000.0, final=None)
        if k in (0, 1, 50, 99):
            expected = [router.latency.get(b, MODEL) for b in fleet.ids]
            got = fleet.latency(MODEL).ttft_ms.tolist()
            assert got == [s.ttft_ms if s else 400.0 for s in expected]
