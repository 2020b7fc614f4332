"""Priority admission in front of one backend: who may start now, who waits, who is turned away.

Ollama queues requests for a loaded model without bound and never says how long the wait is
(reference 7.5), so the proxy keeps its own bounded queue per backend. This module is the pure
state machine: four priority levels, FIFO within a level, ageing so that best-effort work cannot
starve, `max_concurrent` slots plus an optional slot only `critical` may use, and the two bounds
(`max_length` -> 429, `max_wait_ms` -> 503) with an honest Retry-After estimate.

It knows nothing about asyncio, futures or HTTP: the caller passes `now` (monotonic seconds) and
opaque hashable tickets, and gets back what to do with them. `adapters/admission_gate.py` wraps it
for `async with`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=Hashable)

_SERVICE_ALPHA = 0.2


class Priority(IntEnum):
    BEST_EFFORT = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3

    @classmethod
    def parse(cls, text: str) -> Priority:
        """Accept the names (`best-effort`, `normal`, `high`, `critical`) or the numbers 0-3."""
        value = text.strip().lower().replace("_", "-")
        if value.isdigit() and int(value) in cls._value2member_map_:
            return cls(int(value))
        for member in cls:
            if member.label == value:
                return member
        allowed = ", ".join(f"{m.label} ({m.value})" for m in cls)
        raise ValueError(f"unknown priority {text!r}; allowed: {allowed}")

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


# Ageing stops one level below critical: a long-waiting batch job overtakes everything a newer
# `high` stream sends, but a genuine critical request still goes first.
_MAX_AGED = Priority.HIGH


@dataclass(frozen=True, slots=True)
class Admitted(Generic[T]):
    """The ticket holds a slot now and must be `release`d exactly once."""

    ticket: T
    wait_ms: float
    reserved: bool = False


@dataclass(frozen=True, slots=True)
class Queued(Generic[T]):
    """The ticket waits (`depth`: waiters now, itself included) until `release` or `expire`."""

    ticket: T
    depth: int


@dataclass(frozen=True, slots=True)
class Rejected(Generic[T]):
    """The ticket was refused: 429 (queue full) on arrival, 503 (waited too long) after expiry."""

    ticket: T
    status: int
    reason: str
    retry_after_s: int


@dataclass(slots=True)
class _Waiter(Generic[T]):
    ticket: T
    priority: Priority
    since: float
    seq: int


@dataclass(frozen=True, slots=True)
class _Slot:
    since: float
    reserved: bool


def _unwatched(queue: AdmissionQueue[Any]) -> None:
    pass


class AdmissionQueue(Generic[T]):
    """Slots and a bounded priority queue for one backend.

    `on_change(queue)` is called after every transition that changes `in_flight` or the waiters
    (an admission, a queued arrival, a release, an expiry, a cancel; never a rejection on arrival),
    so an owner that mirrors those counts (the router's load columns) updates one row when they
    change instead of reading every queue on every decision.

    >>> q = AdmissionQueue(max_concurrent=1, max_length=8, max_wait_ms=1000, ageing_ms=500)
    >>> q.try_acquire("a", Priority.NORMAL, now=0.0)
    Admitted(ticket='a', wait_ms=0.0, reserved=False)
    >>> q.try_acquire("b", Priority.NORMAL, now=0.5)
    Queued(ticket='b', depth=1)
    >>> q.release("a", now=1.0)
    [Admitted(ticket='b', wait_ms=500.0, reserved=False)]
    """

    def __init__(self, max_concurrent: int, *, max_length: int = 256, max_wait_ms: float = 120_000,
                 ageing_ms: float = 10_000, reserve_critical: bool = True,
                 default_service_ms: float = 2_000,
                 on_change: Callable[[AdmissionQueue[T]], None] = _unwatched) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        if max_length < 0 or max_wait_ms <= 0 or ageing_ms <= 0 or default_service_ms <= 0:
            raise ValueError("max_length must be >= 0 and max_wait_ms, ageing_ms, default_service_ms > 0")
        self.max_concurrent = max_concurrent
        self.max_length = max_length
        self.max_wait_ms = max_wait_ms
        self.ageing_ms = ageing_ms
        self.reserve_critical = reserve_critical
        self.on_change = on_change
        self._levels: tuple[deque[_Waiter[T]], ...] = tuple(deque() for _ in Priority)
        self._index: dict[T, _Waiter[T]] = {}
        self._slots: dict[T, _Slot] = {}
        self._reserved_in_use = False
        self._seq = 0
        self._service_ms = float(default_service_ms)

    # -- views ---------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._slots)

    @property
    def queued(self) -> int:
        return len(self._index)

    @property
    def service_ms(self) -> float:
        """Moving average of how long a slot is held, used for Retry-After and queue-wait estimates."""
        return self._service_ms

    def depth_by_level(self) -> tuple[int, int, int, int]:
        """Waiters per requested priority (best-effort, normal, high, critical), ageing not applied."""
        d = self._levels
        return (len(d[0]), len(d[1]), len(d[2]), len(d[3]))

    def admitted(self, ticket: T) -> bool:
        return ticket in self._slots

    def next_deadline(self) -> float | None:
        """When the oldest waiter expires (monotonic seconds), so the caller can arm one timer."""
        heads = [level[0].since for level in self._levels if level]
        return min(heads) + self.max_wait_ms / 1000 if heads else None

    def retry_after_s(self) -> int:
        """Whole seconds until a newcomer could expect a slot: the queue drained at the observed rate."""
        batches = (self.queued + 1) / self.max_concurrent
        return max(1, math.ceil(batches * self._service_ms / 1000))

    # -- transitions ---------------------------------------------------------------------------

    def try_acquire(self, ticket: T, priority: Priority, now: float) -> Admitted[T] | Queued[T] | Rejected[T]:
        if ticket in self._index or ticket in self._slots:
            raise ValueError(f"ticket {ticket!r} is already queued or admitted")
        # Only a queue that is empty may be bypassed; otherwise a newcomer would overtake waiters.
        outcome: Admitted[T] | Queued[T]
        if not self._index and len(self._slots) - self._reserved_in_use < self.max_concurrent:
            outcome = self._admit(ticket, now, now, reserved=False)
        elif priority is Priority.CRITICAL and self.reserve_critical and not self._reserved_in_use:
            outcome = self._admit(ticket, now, now, reserved=True)
        elif self.queued >= self.max_length:
            return Rejected(ticket, 429, f"queue full ({self.queued} waiting, limit {self.max_length})",
                            self.retry_after_s())
        else:
            self._seq += 1
            waiter = _Waiter(ticket, priority, now, self._seq)
            self._levels[priority].append(waiter)
            self._index[ticket] = waiter
            outcome = Queued(ticket, self.queued)
        self.on_change(self)
        return outcome

    def release(self, ticket: T, now: float) -> list[Admitted[T]]:
        """Free the ticket's slot and return the waiters that start now, best first."""
        slot = self._slots.pop(ticket, None)
        if slot is None:
            raise ValueError(f"ticket {ticket!r} holds no slot (released twice, or never admitted?)")
        if slot.reserved:
            self._reserved_in_use = False
        held_ms = max(0.0, (now - slot.since) * 1000)
        self._service_ms += _SERVICE_ALPHA * (held_ms - self._service_ms)
        woken: list[Admitted[T]] = []
        while self._index and len(self._slots) - self._reserved_in_use < self.max_concurrent:
            waiter = self._pop_best(now)
            woken.append(self._admit(waiter.ticket, waiter.since, now, reserved=False))
        if self.reserve_critical and not self._reserved_in_use and self._levels[Priority.CRITICAL]:
            waiter = self._levels[Priority.CRITICAL].popleft()
            del self._index[waiter.ticket]
            woken.append(self._admit(waiter.ticket, waiter.since, now, reserved=True))
        self.on_change(self)
        return woken

    def expire(self, now: float) -> list[Rejected[T]]:
        """Remove every waiter that has waited `max_wait_ms` or longer."""
        cutoff = now - self.max_wait_ms / 1000
        expired: list[Rejected[T]] = []
        for level in self._levels:
            # Each level is in arrival order, so the expired ones are a prefix.
            while level and level[0].since <= cutoff:
                waiter = level.popleft()
                del self._index[waiter.ticket]
                expired.append(Rejected(waiter.ticket, 503,
                                        f"waited {self.max_wait_ms:.0f} ms without a free slot", 0))
        if not expired:
            return []
        self.on_change(self)
        retry = self.retry_after_s()
        return [Rejected(r.ticket, r.status, r.reason, retry) for r in expired]

    def cancel(self, ticket: T) -> bool:
        """Drop a waiter at once (its client went away). False if it was not waiting."""
        waiter = self._index.pop(ticket, None)
        if waiter is None:
            return False
        self._levels[waiter.priority].remove(waiter)
        self.on_change(self)
        return True

    # -- internals -----------------------------------------------------------------------------

    def _admit(self, ticket: T, since: float, now: float, *, reserved: bool) -> Admitted[T]:
        self._slots[ticket] = _Slot(now, reserved)
        if reserved:
            self._reserved_in_use = True
        return Admitted(ticket, max(0.0, (now - since) * 1000), reserved)

    def _effective(self, waiter: _Waiter[T], now: float) -> int:
        if waiter.priority >= _MAX_AGED:
            return waiter.priority
        gained = int((now - waiter.since) * 1000 // self.ageing_ms)
        return min(_MAX_AGED, waiter.priority + gained)

    def _pop_best(self, now: float) -> _Waiter[T]:
        # Within a level the head is the oldest and so also the most aged: only heads can win.
        best = max((level[0] for level in self._levels if level),
                   key=lambda w: (self._effective(w, now), -w.seq))
        self._levels[best.priority].popleft()
        del self._index[best.ticket]
        return best
