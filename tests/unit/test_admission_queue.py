"""The pure admission queue: slots, ordering, ageing, bounds, the reserved slot, cancellation."""

from __future__ import annotations

import pytest

from ollama_proxy.core.admission import AdmissionQueue, Admitted, Priority, Queued, Rejected

BE, NORMAL, HIGH, CRIT = Priority.BEST_EFFORT, Priority.NORMAL, Priority.HIGH, Priority.CRITICAL


def _queue(**kwargs: object) -> AdmissionQueue[str]:
    settings: dict[str, object] = {"max_concurrent": 1, "max_length": 16, "max_wait_ms": 60_000,
                                   "ageing_ms": 1_000, "reserve_critical": False}
    settings.update(kwargs)
    return AdmissionQueue(**settings)  # type: ignore[arg-type]


def _drain(queue: AdmissionQueue[str], first: str, now: float) -> list[str]:
    """Release slots one by one, starting with `first`, and return the admission order."""
    order: list[str] = []
    holder = first
    while True:
        woken = queue.release(holder, now)
        if not woken:
            return order
        holder = woken[0].ticket
        order.append(holder)


def test_free_slots_admit_at_once() -> None:
    q = _queue(max_concurrent=2)
    assert q.try_acquire("a", NORMAL, 0.0) == Admitted("a", 0.0)
    assert q.try_acquire("b", BE, 0.0) == Admitted("b", 0.0)
    assert q.try_acquire("c", CRIT, 0.0) == Queued("c", 1)
    assert q.in_flight == 2


@pytest.mark.parametrize(("arrivals", "expected"), [
    pytest.param([("b1", BE), ("n1", NORMAL), ("h1", HIGH), ("c1", CRIT)], ["c1", "h1", "n1", "b1"],
                 id="higher-first"),
    pytest.param([("n1", NORMAL), ("n2", NORMAL), ("n3", NORMAL)], ["n1", "n2", "n3"], id="fifo-in-level"),
    pytest.param([("b1", BE), ("h1", HIGH), ("b2", BE), ("h2", HIGH)], ["h1", "h2", "b1", "b2"],
                 id="fifo-per-level"),
])
def test_ordering(arrivals: list[tuple[str, Priority]], expected: list[str]) -> None:
    q = _queue()
    q.try_acquire("running", NORMAL, 0.0)
    for ticket, priority in arrivals:
        assert isinstance(q.try_acquire(ticket, priority, 0.0), Queued)
    assert _drain(q, "running", 0.1) == expected


def test_newcomer_does_not_overtake_waiters_of_its_level() -> None:
    q = _queue()
    q.try_acquire("running", NORMAL, 0.0)
    q.try_acquire("waiting", NORMAL, 0.0)
    q.release("running", 0.1)
    assert isinstance(q.try_acquire("late", NORMAL, 0.2), Queued)


@pytest.mark.parametrize(("waited_s", "expected_first"), [
    pytest.param(0.5, "h1", id="not-aged-yet"),
    pytest.param(1.0, "h1", id="aged-to-normal-still-behind-high"),
    pytest.param(2.0, "b1", id="aged-to-high-and-older"),
])
def test_ageing_lifts_best_effort(waited_s: float, expected_first: str) -> None:
    q = _queue()
    q.try_acquire("running", NORMAL, 0.0)
    q.try_acquire("b1", BE, 0.0)
    q.try_acquire("h1", HIGH, waited_s - 0.01)
    assert q.release("running", waited_s)[0].ticket == expected_first


def test_ageing_never_overtakes_critical() -> None:
    q = _queue()
    q.try_acquire("running", NORMAL, 0.0)
    q.try_acquire("b1", BE, 0.0)
    q.try_acquire("c1", CRIT, 99.0)
    assert q.release("running", 100.0)[0].ticket == "c1"


def test_no_starvation_under_a_steady_high_stream() -> None:
    """One slot, a new high request every 100 ms for ever: the best-effort one still gets in."""
    q = _queue(ageing_ms=1_000)
    q.try_acquire("r0", HIGH, 0.0)
    q.try_acquire("batch", BE, 0.0)
    holder, now = "r0", 0.0
    for i in range(1, 100):
        now = i * 0.1
        q.try_acquire(f"h{i}", HIGH, now)
        holder = q.release(holder, now)[0].ticket
        if holder == "batch":
            break
    assert holder == "batch"
    assert now <= 2.5


def test_reserved_slot_is_for_critical_only() -> None:
    q = _queue(reserve_critical=True)
    q.try_acquire("running", NORMAL, 0.0)
    assert isinstance(q.try_acquire("h", HIGH, 0.0), Queued)
    assert q.try_acquire("c1", CRIT, 0.0) == Admitted("c1", 0.0, reserved=True)
    assert q.try_acquire("c2", CRIT, 0.0) == Queued("c2", 2)
    assert q.in_flight == 2
    # Freeing the reserved slot admits only a critical waiter.
    assert q.release("c1", 1.0) == [Admitted("c2", 1000.0, reserved=True)]
    assert q.release("c2", 2.0) == []
    assert [a.ticket for a in q.release("running", 2.0)] == ["h"]


def test_without_reservation_critical_waits() -> None:
    q = _queue(reserve_critical=False)
    q.try_acquire("running", NORMAL, 0.0)
    assert isinstance(q.try_acquire("c", CRIT, 0.0), Queued)


def test_queue_full_is_429_with_retry_after() -> None:
    q = _queue(max_length=2, default_service_ms=4_000)
    q.try_acquire("running", NORMAL, 0.0)
    q.try_acquire("w1", NORMAL, 0.0)
    q.try_acquire("w2", NORMAL, 0.0)
    rejected = q.try_acquire("w3", CRIT, 0.0)
    assert isinstance(rejected, Rejected)
    assert (rejected.status, rejected.retry_after_s) == (429, 12)
    assert "queue full" in rejected.reason
    assert q.queued == 2


def test_zero_length_queue_rejects_when_busy() -> None:
    q = _queue(max_length=0)
    q.try_acquire("running", NORMAL, 0.0)
    assert isinstance(q.try_acquire("x", NORMAL, 0.0), Rejected)


def test_expiry_is_503_and_only_for_the_old_ones() -> None:
    q = _queue(max_wait_ms=1_000)
    q.try_acquire("running", NORMAL, 0.0)
    q.try_acquire("old", BE, 0.0)
    q.try_acquire("new", HIGH, 0.5)
    assert q.next_deadline() == 1.0
    assert q.expire(0.9) == []
    expired = q.expire(1.0)
    assert [(r.ticket, r.status) for r in expired] == [("old", 503)]
    assert expired[0].retry_after_s >= 1
    assert q.next_deadline() == 1.5
    assert q.depth_by_level() == (0, 0, 1, 0)


def test_cancel_leaves_the_queue_at_once() -> None:
    q = _queue()
    q.try_acquire("running", NORMAL, 0.0)
    q.try_acquire("a", NORMAL, 0.0)
    q.try_acquire("b", NORMAL, 0.0)
    assert q.cancel("a") is True
    assert q.cancel("a") is False
    assert q.cancel("running") is False
    assert q.depth_by_level() == (0, 1, 0, 0)
    assert [w.ticket for w in q.release("running", 1.0)] == ["b"]


def test_wait_time_is_reported_on_admission() -> None:
    q = _queue()
    q.try_acquire("running", NORMAL, 10.0)
    q.try_acquire("w", NORMAL, 10.25)
    assert q.release("running", 10.75) == [Admitted("w", 500.0)]


def test_service_time_feeds_retry_after() -> None:
    q = _queue(max_concurrent=2, default_service_ms=1_000)
    for i in range(20):
        q.try_acquire(f"t{i}", NORMAL, float(i))
        q.release(f"t{i}", i + 10.0)
    assert q.service_ms == pytest.approx(10_000, rel=0.02)
    assert q.retry_after_s() == 5


def test_misuse_is_refused() -> None:
    q = _queue()
    q.try_acquire("a", NORMAL, 0.0)
    with pytest.raises(ValueError, match="already queued or admitted"):
        q.try_acquire("a", NORMAL, 0.0)
    q.release("a", 1.0)
    with pytest.raises(ValueError, match="holds no slot"):
        q.release("a", 1.0)
    with pytest.raises(ValueError, match="max_concurrent must be at least 1"):
        AdmissionQueue(0)


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("2", HIGH, id="digit"),
    pytest.param(" Critical ", CRIT, id="padded-name"),
    pytest.param("best_effort", BE, id="underscore"),
])
def test_priority_parse(text: str, expected: Priority) -> None:
    assert Priority.parse(text) is expected


def test_priority_parse_lists_allowed_values() -> None:
    allowed = r"allowed: best-effort \(0\), normal \(1\), high \(2\), critical \(3\)"
    with pytest.raises(ValueError, match=allowed):
        Priority.parse("-1")


def test_on_change_reports_every_change_of_the_counts_and_nothing_else() -> None:
    """The router mirrors in_flight and depth_by_level from this callback, so a missed call is a
    stale load column and an extra one is wasted work."""
    seen: list[tuple[int, tuple[int, int, int, int]]] = []
    q = _queue(max_length=2, max_wait_ms=1_000)
    q.on_change = lambda queue: seen.append((queue.in_flight, queue.depth_by_level()))
    q.try_acquire("a", NORMAL, 0.0)
    q.try_acquire("b", HIGH, 0.0)
    q.try_acquire("c", BE, 0.5)
    q.try_acquire("d", BE, 0.5)  # rejected: queue full, nothing changed
    q.cancel("c")
    q.cancel("c")  # no longer waiting: nothing changed
    assert q.expire(0.9) == []  # nobody old enough: nothing changed
    assert [r.ticket for r in q.expire(1.0)] == ["b"]
    q.release("a", 1.0)
    assert seen == [(1, (0, 0, 0, 0)), (1, (0, 0, 1, 0)), (1, (1, 0, 1, 0)), (1, (0, 0, 1, 0)),
                    (1, (0, 0, 0, 0)), (0, (0, 0, 0, 0))]
