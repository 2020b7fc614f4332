"""What changes with every request, per backend: requests in flight and queued per priority.

`Load` is one snapshot as selection reads it (rows in the fleet's order): Python lists, which the
scalar pass of a small fleet reads, and numpy rows built from them only when the vector pass of a
large fleet asks. `LoadBoard` keeps it current one row at a time as each backend's admission queue
changes, so that decisions share one `Load` until the next change. Pure: the owner (the backend
pool) reports each change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, cast

import numpy as np

from ollama_proxy.core.routing.state import BackendView


class Load:
    """The per-request numbers, one row per backend: requests in flight (`flying`) and waiters per
    priority (`waiting`, None when nobody waits anywhere: the usual case)."""

    __slots__ = ("_in_flight", "_queued", "flying", "idle", "waiting")

    def __init__(self, flying: list[int], waiting: list[tuple[int, ...]] | None) -> None:
        self.flying, self.waiting = flying, waiting
        self.idle = waiting is None and not any(flying)  # nothing in flight or queued anywhere
        self._in_flight: np.ndarray | None = None
        self._queued: np.ndarray | None = None

    @classmethod
    def counted(cls, in_flight: Sequence[int], queued: Sequence[Sequence[int]] | None) -> Load:
        """From per-row counts; `queued` None (or all zero) when nobody waits."""
        waiting = [tuple(row) for row in queued] if queued is not None and any(map(any, queued)) else None
        return cls(list(in_flight), waiting)

    @classmethod
    def of(cls, views: Sequence[BackendView]) -> Load:
        return cls.counted([v.in_flight for v in views], [v.queued for v in views])

    @property
    def in_flight(self) -> np.ndarray:
        """int64 (n,)."""
        if self._in_flight is None:
            self._in_flight = np.array(self.flying, dtype=np.int64)
        return self._in_flight

    @property
    def queued(self) -> np.ndarray | None:
        """int64 (n, 4), or None when nobody waits."""
        if self._queued is None and self.waiting is not None:
            self._queued = np.array(self.waiting, dtype=np.int64).reshape(len(self.flying), 4)
        return self._queued

    def ahead(self, priority: int) -> np.ndarray:
        """Requests that would start before a new one at `priority`: in flight, queued at or above it."""
        queued = self.queued
        if queued is None:
            return self.in_flight
        return cast(np.ndarray, self.in_flight + queued[:, priority:].sum(axis=1))

    def busy(self) -> np.ndarray:
        """In flight plus every waiter."""
        queued = self.queued
        if queued is None:
            return self.in_flight
        return cast(np.ndarray, self.in_flight + queued.sum(axis=1))


class QueueCounts(Protocol):
    """What `LoadBoard` reads of a backend's admission queue (`core.admission.AdmissionQueue`)."""

    @property
    def in_flight(self) -> int: ...
    @property
    def queued(self) -> int: ...
    def depth_by_level(self) -> tuple[int, int, int, int]: ...


class LoadBoard:
    """The live `Load` of a fixed set of rows, told of each row's change as it happens.

    Reading every backend's queue on every decision costs a few hundred nanoseconds per backend;
    a queue changes only when a request arrives, starts, ends or gives up, so the owner reports
    that one row (`count`) and decisions share one `Load` until the next change.
    """

    _IDLE_ROW = (0, 0, 0, 0)

    def __init__(self, rows: int) -> None:
        self._flying = [0] * rows
        self._waiting: list[tuple[int, ...]] = [self._IDLE_ROW] * rows
        self._waiters = 0  # the sum over `_waiting`, so a snapshot needs no pass over the rows
        self._row_waiters = [0] * rows
        self._load: Load | None = None

    def count(self, row: int, queue: QueueCounts) -> None:
        """Row `row` now holds what `queue` says."""
        self._flying[row] = queue.in_flight
        waiting = queue.queued
        if waiting or self._row_waiters[row]:
            self._waiters += waiting - self._row_waiters[row]
            self._row_waiters[row] = waiting
            self._waiting[row] = queue.depth_by_level()
        self._load = None

    def load(self) -> Load:
        """The counts now; the same object until the next `count` (copies: it outlives them)."""
        if self._load is None:
            self._load = Load(self._flying.copy(), self._waiting.copy() if self._waiters else None)
        return self._load
