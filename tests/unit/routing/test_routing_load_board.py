"""The pool's load columns follow each admission queue as it changes (acquire, release, expire,
cancel), so the router reads one shared `Load` per decision instead of every queue."""

from __future__ import annotations

import numpy as np
import pytest

from ollama_proxy.config.load import validate
from ollama_proxy.core.admission import Priority
from ollama_proxy.core.routing.load import Load, LoadBoard
from ollama_proxy.service.pool import BackendPool
from ollama_proxy.service.tasks import TaskSet
from ollama_proxy.testing.memory import MemoryTransport


def _pool(n: int = 3) -> BackendPool:
    config = validate({
        "backends": [{"id": f"b{i}", "hardware": "igpu", "endpoint": f"http://127.0.0.1:{22000 + i}",
                      "characteristics": {"max_concurrent": 1}} for i in range(n)],
        "router": {"queue": {"max_wait_ms": 1000, "reserve_critical": False}}})
    return BackendPool(config.backends, config.router, MemoryTransport(), TaskSet())


def _counted(pool: BackendPool) -> Load:
    """What reading every queue directly says (the reference the board must match)."""
    queues = [b.gate.queue for b in pool]
    return Load.counted([q.in_flight for q in queues], [q.depth_by_level() for q in queues])


def _same(a: Load, b: Load) -> bool:
    same_queued = (a.queued is None and b.queued is None) or (
        a.queued is not None and b.queued is not None and np.array_equal(a.queued, b.queued))
    return np.array_equal(a.in_flight, b.in_flight) and same_queued and a.idle == b.idle


def test_the_row_follows_acquire_release_expire_and_cancel() -> None:
    pool = _pool()
    queue = pool.backends["b1"].gate.queue
    steps = [
        lambda: queue.try_acquire("a", Priority.NORMAL, 0.0),
        lambda: queue.try_acquire("b", Priority.HIGH, 0.0),
        lambda: queue.try_acquire("c", Priority.BEST_EFFORT, 0.5),
        lambda: queue.cancel("c"),
        lambda: queue.expire(1.0),  # b has waited max_wait_ms
        lambda: queue.try_acquire("d", Priority.NORMAL, 1.0),
        lambda: queue.release("a", 1.5),  # d starts
        lambda: queue.release("d", 2.0),
    ]
    expected = [(1, (0, 0, 0, 0)), (1, (0, 0, 1, 0)), (1, (1, 0, 1, 0)), (1, (0, 0, 1, 0)),
                (1, (0, 0, 0, 0)), (1, (0, 1, 0, 0)), (1, (0, 0, 0, 0)), (0, (0, 0, 0, 0))]
    assert pool.load_board.load().idle
    for step, (flying, waiting) in zip(steps, expected, strict=True):
        step()
        load = pool.load_board.load()
        assert load.in_flight.tolist() == [0, flying, 0]
        assert (load.queued.tolist()[1] if load.queued is not None else [0, 0, 0, 0]) == list(waiting)
        assert _same(load, _counted(pool))
    assert pool.load_board.load().idle


def test_a_snapshot_is_shared_until_a_change_and_never_changes_after() -> None:
    pool = _pool()
    queue = pool.backends["b0"].gate.queue
    queue.try_acquire("a", Priority.NORMAL, 0.0)
    before = pool.load_board.load()
    assert pool.load_board.load() is before  # nothing changed: no new arrays per decision
    queue.try_acquire("b", Priority.NORMAL, 0.0)
    after = pool.load_board.load()
    assert after is not before
    assert before.queued is None and before.in_flight.tolist() == [1, 0, 0]  # a decision may still hold it
    assert after.queued is not None and after.queued.tolist()[0] == [0, 1, 0, 0]


@pytest.mark.parametrize(("rows", "changes"), [
    pytest.param(1, [(0, 2, (0, 0, 0, 0)), (0, 0, (0, 0, 0, 0))], id="in-flight-only"),
    pytest.param(2, [(0, 1, (1, 0, 0, 2)), (1, 1, (0, 3, 0, 0)), (0, 1, (0, 0, 0, 0))], id="waiters-come-and-go"),
    pytest.param(2, [(1, 1, (0, 1, 0, 0)), (1, 0, (0, 0, 0, 0))], id="back-to-idle"),
])
def test_board_matches_counting_every_row(rows: int, changes: list[tuple[int, int, tuple[int, ...]]]) -> None:
    class Counts:
        def __init__(self, in_flight: int, depth: tuple[int, ...]) -> None:
            self.in_flight, self.queued, self._depth = in_flight, sum(depth), depth

        def depth_by_level(self) -> tuple[int, ...]:
            return self._depth

    board, now = LoadBoard(rows), [(0, (0, 0, 0, 0))] * rows
    for row, flying, depth in changes:
        board.count(row, Counts(flying, depth))  # type: ignore[arg-type]
        now[row] = (flying, depth)
        assert _same(board.load(), Load.counted([f for f, _ in now], [d for _, d in now]))
