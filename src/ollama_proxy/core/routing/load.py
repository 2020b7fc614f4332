"""What changes with every request, per backend: requests in flight and queued per priority.

`Load` is one snapshot as selection reads it (numpy rows in the fleet's order); `LoadBoard` keeps it
current one row at a time as each backend's admission queue changes, so that decisions share one
`Load` until the next change. Pure: the owner (the backend pool) reports each change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np

from ollama_proxy.core.routing.state import BackendView


@dataclass(frozen=True, slots=True)
class Load:
    """The per-request numbers, one row per backend: requests in flight and waiters per priority."""

    in_flight: np.ndarray  # int64 (n,)
    queued: np.ndarray | None  # int64 (n, 4); None when nobody waits anywhere (the usual case)
    idle: bool  # nothing in flight or queued anywhere

    @classmethod
    def counted(cls, in_flight: Sequence[int], queued: Sequence[Sequence[int]] | None) -> Load:
        """From per-row counts; `queued` None (or all zero) when nobody waits."""
        waits = np.array(queued, dtype=np.int64).reshape(len(in_flight), 4) if queued is not None else None
        if waits is not None and not waits.any():
            waits = None
        return cls(np.array(in_flight, dtype=np.int64), waits, waits is None and not any(in_flight))

    @classmethod
    def of(cls, views: Sequence[BackendView]) -> Load:
        return cls.counted([v.in_flight for v in views], [v.queued for v in views])

    def ahead(self, priority: int) -> np.ndarray:
        """Requests that would start before a new one at `priority`: in flight, queued at or above it."""
        if self.queued is None:
            return self.in_flight
        return cast(np.ndarray, self.in_flight + self.queued[:, priority:].sum(axis=1))

    def busy(self) -> np.ndarray:
        """In flight plus every waiter."""
        if self.queued is None:
            return self.in_flight
        return cast(np.ndarray, self.in_flight + self.queued.sum(axis=1))


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

    def __init__(self, rows: int) -> None:
        self._in_flight = np.zeros(rows, dtype=np.int64)
        self._queued = np.zeros((rows, 4), dtype=np.int64)
        # Python-side totals, so a change and a snapshot need no pass over the rows.
        self._row_flying = [0] * rows
        self._row_waiting = [0] * rows
        self._flying = self._waiting = 0
        self._load: Load | None = None

    def count(self, row: int, queue: QueueCounts) -> None:
        """Row `row` now holds what `queue` says."""
        flying, waiting = queue.in_flight, queue.queued
        self._flying += flying - self._row_flying[row]
        self._row_flying[row] = self._in_flight[row] = flying
        if waiting or self._row_waiting[row]:
            self._waiting += waiting - self._row_waiting[row]
            self._row_waiting[row] = waiting
            self._queued[row] = queue.depth_by_level()
        self._load = None

    def load(self) -> Load:
        """The counts now; the same object until the next `count` (copies: it outlives them)."""
        if self._load is None:
            self._load = Load(self._in_flight.copy(), self._queued.copy() if self._waiting else None,
                              not self._flying and not self._waiting)
        return self._load
