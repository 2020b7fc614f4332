"""asyncio front of the pure admission queue: `async with gate.admit(priority) as wait_ms:`.

One gate per backend. It turns the queue's decisions into awaits: a queued request sleeps on a
future until a slot frees, a rejected one raises `NoBackendAvailable` (429 queue full, 503 waited
too long, both with `retry_after_s`), and a request whose client goes away (its task is cancelled)
leaves the queue at once, so nothing is ever sent upstream for it. One timer, armed for the oldest
waiter's deadline, enforces `max_wait_ms`.

It knows nothing about HTTP or routing: ordering, ageing and bounds live in `core/admission.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType

from ollama_proxy.config.schema import QueueConfig
from ollama_proxy.core.admission import AdmissionQueue, Admitted, Priority, Rejected
from ollama_proxy.errors import NoBackendAvailable

# Timers may fire a hair before their deadline (asyncio rounds by clock resolution); aim just past it.
_TIMER_SLACK_S = 0.001


class AdmissionGate:
    """Concurrency limit and priority queue for one backend.

    >>> gate = AdmissionGate.from_config("gpu", max_concurrent=4, config=QueueConfig())
    >>> async def handle() -> None:
    ...     async with gate.admit(Priority.HIGH) as wait_ms:
    ...         ...  # send upstream; wait_ms is how long the request queued
    """

    def __init__(self, backend_id: str, queue: AdmissionQueue[object], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.backend_id = backend_id
        self.queue = queue
        self._clock = clock
        self._waiters: dict[object, asyncio.Future[float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None

    @classmethod
    def from_config(cls, backend_id: str, max_concurrent: int, config: QueueConfig, *,
                    clock: Callable[[], float] = time.monotonic,
                    on_change: Callable[[AdmissionQueue[object]], None] | None = None) -> AdmissionGate:
        """Build from `characteristics.max_concurrent` and `router.queue`; `on_change` is the
        queue's (called whenever its in-flight or queued counts change)."""
        queue: AdmissionQueue[object] = AdmissionQueue(
            max_concurrent, max_length=config.max_length, max_wait_ms=config.max_wait_ms,
            ageing_ms=config.ageing_ms, reserve_critical=config.reserve_critical)
        if on_change is not None:
            queue.on_change = on_change
        return cls(backend_id, queue, clock=clock)

    def admit(self, priority: Priority = Priority.NORMAL) -> Admission:
        """Hold a slot for the body of the `async with`; gives the milliseconds spent queued."""
        return Admission(self, priority)

    def try_enter(self, ticket: object, priority: Priority) -> float | None:
        """The milliseconds queued (none) when a slot is free now; None when `ticket` must wait (`wait`)."""
        outcome = self.queue.try_acquire(ticket, priority, self._clock())
        if isinstance(outcome, Admitted):
            return outcome.wait_ms
        if isinstance(outcome, Rejected):
            raise self._error(outcome)
        return None

    async def wait(self, ticket: object) -> float:
        """Sleep until queued `ticket` is admitted (its milliseconds queued) or refused."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters[ticket] = future
        self._arm()
        try:
            return await future
        except asyncio.CancelledError:
            self._waiters.pop(ticket, None)
            # Woken in the same instant as cancelled: the slot is ours, so hand it on.
            if not self.queue.cancel(ticket) and self.queue.admitted(ticket):
                self.release(ticket)
            self._arm()
            raise

    def release(self, ticket: object) -> None:
        for admitted in self.queue.release(ticket, self._clock()):
            future = self._waiters.pop(admitted.ticket, None)
            # A done future was cancelled with its task; that task's handler releases the slot.
            if future is not None and not future.done():
                future.set_result(admitted.wait_ms)
        self._arm()

    def _arm(self) -> None:
        """Keep exactly one timer, for the oldest waiter's deadline."""
        deadline = self.queue.next_deadline()
        if deadline == self._timer_deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self._clock()) + _TIMER_SLACK_S
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        for rejected in self.queue.expire(self._clock()):
            future = self._waiters.pop(rejected.ticket, None)
            if future is not None and not future.done():
                future.set_exception(self._error(rejected))
        self._arm()

    def _error(self, rejected: Rejected[object]) -> NoBackendAvailable:
        return NoBackendAvailable(
            f"backend {self.backend_id!r} is busy: {rejected.reason}; retry in {rejected.retry_after_s} s",
            {self.backend_id: rejected.reason}, status=rejected.status, retry_after_s=rejected.retry_after_s)


class Admission:
    """One `async with gate.admit(priority) as wait_ms:`: a plain class rather than a generator-based
    context manager, as every request enters one and a free slot needs no await at all."""

    __slots__ = ("_gate", "_priority", "_ticket")

    def __init__(self, gate: AdmissionGate, priority: Priority) -> None:
        self._gate, self._priority, self._ticket = gate, priority, object()

    async def __aenter__(self) -> float:
        wait_ms = self._gate.try_enter(self._ticket, self._priority)
        return await self._gate.wait(self._ticket) if wait_ms is None else wait_ms

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._gate.release(self._ticket)
