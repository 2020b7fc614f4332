"""Fault injection: what `POST /sim/faults` switches on, and which requests it hits.

A fault is a plain value; `FaultBox` hands it to at most `count` matching requests. How each mode
is carried out lives with the code that writes responses (`sim.streams` and the app middleware).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ollama_proxy.sim.rules import SimError

MODES = ("error", "hang", "drop_mid_stream", "busy", "malformed_line", "slow")
BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault mode.

    `after_chunks` applies to streams: `drop_mid_stream` and `malformed_line` act after that many
    lines (default 1); `error` and `hang` act mid-stream when it is given, before any output when not.
    `paths` are path prefixes (default: every path outside /sim/). `delay_s` is the `slow` delay,
    in real seconds (not scaled).
    """

    mode: str
    count: int | None = None
    after_chunks: int | None = None
    status: int = 500
    paths: tuple[str, ...] = ()
    delay_s: float = 2.0
    message: str = "simulated failure"

    @classmethod
    def from_json(cls, body: Any) -> Fault:
        if not isinstance(body, Mapping):
            raise SimError(400, "fault must be a JSON object")
        mode = body.get("mode")
        if mode not in MODES:
            raise SimError(400, f"unknown fault mode {mode!r}; choose one of {', '.join(MODES)}")
        unknown = set(body) - {"mode", "count", "after_chunks", "status", "paths", "delay_s", "message"}
        if unknown:
            raise SimError(400, f"unknown fault fields: {', '.join(sorted(unknown))}")
        count, after = body.get("count"), body.get("after_chunks")
        for name, value in (("count", count), ("after_chunks", after)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise SimError(400, f"{name} must be a non-negative integer, got {value!r}")
        status = body.get("status", 503 if mode == "busy" else 500)
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise SimError(400, f"status must be an HTTP error status 400-599, got {status!r}")
        paths = body.get("paths") or ()
        if isinstance(paths, str) or not all(isinstance(p, str) for p in paths):
            raise SimError(400, "paths must be a list of path prefixes such as [\"/api/chat\"]")
        delay = body.get("delay_s", 2.0)
        if not isinstance(delay, int | float) or delay < 0:
            raise SimError(400, f"delay_s must be a non-negative number, got {delay!r}")
        message = body.get("message", BUSY_MESSAGE if mode == "busy" else "simulated failure")
        return cls(mode, count, after, status, tuple(paths), float(delay), str(message))

    @property
    def before_response(self) -> bool:
        """Whether the fault acts before anything is written (else it acts inside a stream)."""
        if self.mode in ("busy", "slow"):
            return True
        return self.mode in ("error", "hang") and self.after_chunks is None

    def matches(self, path: str) -> bool:
        if path.startswith("/sim/"):
            return False
        return not self.paths or any(path.startswith(p) for p in self.paths)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "count": self.count, "after_chunks": self.after_chunks,
                "status": self.status, "paths": list(self.paths), "delay_s": self.delay_s,
                "message": self.message}


class FaultBox:
    """The active fault, handed out to matching requests until its count runs out."""

    def __init__(self) -> None:
        self._fault: Fault | None = None
        self._left: int | None = None
        self.triggered = 0

    def set(self, fault: Fault) -> None:
        self._fault, self._left = fault, fault.count

    def clear(self) -> None:
        self._fault, self._left = None, None

    @property
    def active(self) -> Fault | None:
        return self._fault

    def take(self, path: str) -> Fault | None:
        fault = self._fault
        if fault is None or not fault.matches(path):
            return None
        if self._left is not None:
            if self._left <= 0:
                return None
            self._left -= 1
        self.triggered += 1
        return fault
