"""Circuit breaker for one backend: stop sending to a server that keeps failing, probe it later.

closed --N consecutive failures--> open --reset_s--> half-open --probe ok--> closed
                                     ^                   |
                                     +---probe failed----+

Only the backend's own failures count: connect errors, timeouts and 5xx. A client that goes away
says nothing about the backend, and Ollama's 503 "server busy" is backpressure from a healthy server
(its load queue is full, reference 7.5): both leave the breaker alone (olla #144 shows why a 5xx
that is not busy must count). Nor does a 500 the request itself caused: Ollama answers an option
of the wrong JSON type, an invalid `format` or a broken `template` with a 500 (reference 1.6),
and every backend would answer the same. The clock is passed in; nothing here sleeps or schedules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from enum import StrEnum

from ollama_proxy.core.routing.state import BreakerState


class Outcome(StrEnum):
    SUCCESS = "success"
    CONNECT_ERROR = "connect_error"
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"
    BUSY = "busy"
    CLIENT_GONE = "client_gone"
    REQUEST_FAULT = "request_fault"


_FAILURES = frozenset({Outcome.CONNECT_ERROR, Outcome.TIMEOUT, Outcome.SERVER_ERROR})


def classify_status(status: int, body: str = "") -> Outcome:
    """Outcome of an answered request. A 4xx is the client's problem and proves the server is alive;
    so does a 500 whose text says the request was invalid (REQUEST_FAULT: relay it, do not retry)."""
    if status < 500:
        return Outcome.SUCCESS
    lowered = body.lower()
    if status == 503 and "server busy" in lowered:
        return Outcome.BUSY
    if status == 500 and _is_request_fault(lowered):
        return Outcome.REQUEST_FAULT
    return Outcome.SERVER_ERROR


# Ollama's 500 texts for a request no backend could serve as sent: a wrong option type, an invalid
# `format`, a Go template that does not parse ("template: :1: ..."). Matched loosely (texts have
# changed across versions); a load failure or a crash says none of these.
_REQUEST_FAULT_TEXT = re.compile(r'option \\?"[^"\\]+\\?" must be of type|invalid format|template: \S*:\d+:')


def _is_request_fault(lowered_body: str) -> bool:
    return _REQUEST_FAULT_TEXT.search(lowered_body) is not None


class CircuitBreaker:
    """Breaker state machine; one per backend, owned by the pool.

    The pool calls `record` for every finished attempt (and for health checks, which make good
    probes), `on_dispatch` when it sends a request, and `routing_state` when it builds the
    `BackendView` that selection reads.

    `on_change` is called whenever an event changes what `routing_state` answers, so a router that
    caches it knows when to look again; `routing_state_expiry` says when time alone will change it.
    """

    def __init__(self, failures: int = 3, reset_s: float = 10.0, *,
                 on_change: Callable[[], None] | None = None) -> None:
        if failures < 1 or reset_s <= 0:
            raise ValueError(f"failures must be >= 1 and reset_s > 0, got {failures} and {reset_s}")
        self.failures = failures
        self.reset_s = reset_s
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probe_since: float | None = None
        self._on_change = on_change

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive

    def state(self, now: float) -> BreakerState:
        """The true state, for `/backends` and logs."""
        if self._opened_at is None:
            return BreakerState.CLOSED
        return BreakerState.HALF_OPEN if now - self._opened_at >= self.reset_s else BreakerState.OPEN

    def routing_state(self, now: float) -> BreakerState:
        """The state selection should see: half-open with a probe already out counts as open.

        One probe at a time, so a recovering server is not hit by a burst. A probe that never
        reports back (its task died) stops blocking after another `reset_s`.
        """
        state = self.state(now)
        if (state is BreakerState.HALF_OPEN and self._probe_since is not None
                and now - self._probe_since < self.reset_s):
            return BreakerState.OPEN
        return state

    def routing_state_expiry(self, now: float) -> float:
        """The earliest time after `now` at which `routing_state` may change with no event (inf: never).

        Open turns half-open `reset_s` after opening, and a probe stops blocking `reset_s` after it left.
        """
        times = [t + self.reset_s for t in (self._opened_at, self._probe_since) if t is not None]
        return min((t for t in times if t > now), default=math.inf)

    def on_dispatch(self, now: float) -> None:
        """A request is being sent; in half-open it becomes the probe."""
        if self.state(now) is BreakerState.HALF_OPEN:
            self._probe_since = now
            self._changed()

    def record(self, outcome: Outcome, now: float) -> BreakerState:
        """Account for one finished attempt and return the new state."""
        before = (self._opened_at, self._probe_since)
        self._record(outcome, now)
        if (self._opened_at, self._probe_since) != before:
            self._changed()
        return self.state(now)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _record(self, outcome: Outcome, now: float) -> None:
        if outcome in _FAILURES:
            self._consecutive += 1
            state = self.state(now)
            # A failed probe re-opens at once; in closed it takes `failures` in a row.
            if state is BreakerState.HALF_OPEN or (state is BreakerState.CLOSED
                                                   and self._consecutive >= self.failures):
                self._opened_at = now
            self._probe_since = None
        elif outcome is Outcome.SUCCESS or outcome is Outcome.REQUEST_FAULT:
            # An invalid request the server answered still proves the server is there.
            self._consecutive = 0
            self._opened_at = None
            self._probe_since = None
        else:
            # Busy or client gone: the probe told us nothing, so let another one go.
            self._probe_since = None
