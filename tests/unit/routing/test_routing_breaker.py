"""Circuit breaker transitions; time is passed in, so no test sleeps."""

from __future__ import annotations

import pytest

from ollama_proxy.core.routing.breaker import CircuitBreaker, Outcome, classify_status
from ollama_proxy.core.routing.state import BreakerState

CLOSED, OPEN, HALF = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


@pytest.mark.parametrize(("status", "body", "expected"), [
    pytest.param(200, "", Outcome.SUCCESS, id="ok"),
    pytest.param(404, '{"error":"model not found"}', Outcome.SUCCESS, id="4xx-proves-alive"),
    pytest.param(500, "", Outcome.SERVER_ERROR, id="500"),
    pytest.param(503, '{"error":"Server busy, please try again.  maximum pending requests exceeded"}',
                 Outcome.BUSY, id="ollama-busy-is-backpressure"),
    pytest.param(503, "upstream unavailable", Outcome.SERVER_ERROR, id="other-503-counts"),
    pytest.param(500, '{"error":"option \\"stop\\" must be of type array"}', Outcome.REQUEST_FAULT,
                 id="wrong-option-type"),
    pytest.param(500, '{"error":"option \\"num_ctx\\" must be of type integer"}', Outcome.REQUEST_FAULT,
                 id="wrong-num-ctx-type"),
    pytest.param(500, '{"error":"invalid format: \\"yaml\\"; expected \\"json\\" or a valid JSON Schema object"}',
                 Outcome.REQUEST_FAULT, id="invalid-format"),
    pytest.param(500, '{"error":"template: :1:12: executing \\"\\" at <.Foo>: can\'t evaluate field Foo"}',
                 Outcome.REQUEST_FAULT, id="broken-template"),
    pytest.param(500, '{"error":"error loading model template: no such file"}', Outcome.SERVER_ERROR,
                 id="load-failure-is-the-backend"),
    pytest.param(500, '{"error":"llama runner process has terminated: signal: killed"}', Outcome.SERVER_ERROR,
                 id="runner-crash"),
    pytest.param(502, 'option "stop" must be of type array', Outcome.SERVER_ERROR, id="only-a-500-is-a-request-fault"),
])
def test_classify_status(status: int, body: str, expected: Outcome) -> None:
    assert classify_status(status, body) is expected


def _opened(now: float = 0.0) -> CircuitBreaker:
    breaker = CircuitBreaker(failures=3, reset_s=10)
    for _ in range(3):
        breaker.record(Outcome.CONNECT_ERROR, now)
    return breaker


@pytest.mark.parametrize(("outcomes", "expected"), [
    pytest.param([Outcome.CONNECT_ERROR] * 2, CLOSED, id="below-threshold"),
    pytest.param([Outcome.CONNECT_ERROR] * 3, OPEN, id="three-connect-errors"),
    pytest.param([Outcome.SERVER_ERROR, Outcome.TIMEOUT, Outcome.SERVER_ERROR], OPEN, id="mixed-failures"),
    pytest.param([Outcome.CONNECT_ERROR] * 2 + [Outcome.SUCCESS, Outcome.CONNECT_ERROR], CLOSED,
                 id="success-resets-the-count"),
    pytest.param([Outcome.BUSY] * 10, CLOSED, id="busy-never-counts"),
    pytest.param([Outcome.CLIENT_GONE] * 10, CLOSED, id="client-disconnect-never-counts"),
    pytest.param([Outcome.CONNECT_ERROR, Outcome.BUSY, Outcome.CONNECT_ERROR, Outcome.CLIENT_GONE,
                  Outcome.CONNECT_ERROR], OPEN, id="neutral-outcomes-do-not-reset"),
])
def test_closed_to_open(outcomes: list[Outcome], expected: BreakerState) -> None:
    breaker = CircuitBreaker(failures=3, reset_s=10)
    for outcome in outcomes:
        breaker.record(outcome, now=1.0)
    assert breaker.state(1.0) is expected


def test_open_becomes_half_open_after_reset() -> None:
    breaker = _opened(now=100.0)
    assert breaker.state(109.9) is OPEN
    assert breaker.state(110.0) is HALF
    assert breaker.routing_state(110.0) is HALF


@pytest.mark.parametrize(("probe_outcome", "expected"), [
    pytest.param(Outcome.SUCCESS, CLOSED, id="probe-ok-closes"),
    pytest.param(Outcome.CONNECT_ERROR, OPEN, id="probe-failure-reopens"),
    pytest.param(Outcome.SERVER_ERROR, OPEN, id="probe-5xx-reopens"),
    pytest.param(Outcome.BUSY, HALF, id="probe-busy-stays-half-open"),
    pytest.param(Outcome.CLIENT_GONE, HALF, id="probe-abandoned-stays-half-open"),
])
def test_half_open_probe(probe_outcome: Outcome, expected: BreakerState) -> None:
    breaker = _opened(now=0.0)
    breaker.on_dispatch(now=10.0)
    assert breaker.record(probe_outcome, now=10.5) is expected


def test_only_one_probe_at_a_time() -> None:
    breaker = _opened(now=0.0)
    breaker.on_dispatch(now=10.0)
    assert breaker.state(11.0) is HALF
    assert breaker.routing_state(11.0) is OPEN
    breaker.record(Outcome.CLIENT_GONE, now=12.0)
    assert breaker.routing_state(12.0) is HALF


def test_a_probe_that_never_reports_stops_blocking() -> None:
    breaker = _opened(now=0.0)
    breaker.on_dispatch(now=10.0)
    assert breaker.routing_state(19.9) is OPEN
    assert breaker.routing_state(20.0) is HALF


def test_reopened_breaker_waits_a_full_reset_again() -> None:
    breaker = _opened(now=0.0)
    breaker.on_dispatch(now=10.0)
    breaker.record(Outcome.TIMEOUT, now=11.0)
    assert breaker.state(20.9) is OPEN
    assert breaker.state(21.0) is HALF


def test_dispatch_while_closed_is_not_a_probe() -> None:
    breaker = CircuitBreaker(failures=1, reset_s=5)
    breaker.on_dispatch(now=0.0)
    breaker.record(Outcome.CONNECT_ERROR, now=1.0)
    assert breaker.routing_state(6.0) is HALF


@pytest.mark.parametrize(("failures", "reset_s"), [
    pytest.param(0, 1.0, id="zero-failures"),
    pytest.param(1, 0.0, id="zero-reset"),
])
def test_bad_settings_are_refused(failures: int, reset_s: float) -> None:
    with pytest.raises(ValueError, match="failures must be"):
        CircuitBreaker(failures, reset_s)


def test_a_request_fault_does_not_open_the_breaker_and_proves_the_server_alive() -> None:
    breaker = CircuitBreaker(failures=3, reset_s=10)
    for _ in range(10):
        assert breaker.record(Outcome.REQUEST_FAULT, 0.0) is CLOSED
    opened = _opened()
    assert opened.record(Outcome.REQUEST_FAULT, 11.0) is CLOSED  # a half-open probe answered
