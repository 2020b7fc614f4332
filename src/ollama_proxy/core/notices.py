"""Desktop notifications: which events deserve one, what it says, and how often one may come.

Pure: the clock is an argument and nothing is sent here (`adapters/dbus` sends what this returns).
Two kinds of news interrupt the user: auto mode switching what it stands for (the routing changes
under them without their asking), and the machine's thermal state changing. Anything the user did
themselves (setting a mode) is not news to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from ollama_proxy.core.modes import EfficiencyMode

# A battery draining past a threshold or a fan hovering at one can switch things every few seconds
# (the dwell only slows that down); one notification a minute per kind is news, more is noise.
NOTICE_INTERVAL_S = 60.0


class NoticeKind(StrEnum):
    MODE = "mode"
    THERMAL = "thermal"


class Urgency(IntEnum):
    """The freedesktop notification `urgency` hint's values."""

    LOW = 0
    NORMAL = 1
    CRITICAL = 2


@dataclass(frozen=True, slots=True)
class Notice:
    kind: NoticeKind
    summary: str
    body: str
    icon: str
    urgency: Urgency = Urgency.NORMAL


def auto_switch_notice(set_mode: EfficiencyMode, before: EfficiencyMode, after: EfficiencyMode,
                       reason: str) -> Notice | None:
    """A notice when auto mode, the mode set, switched the mode in force from `before` to `after`;
    None otherwise (a mode set by hand is no news to whoever set it)."""
    if set_mode is not EfficiencyMode.AUTO or before is after:
        return None
    return Notice(NoticeKind.MODE, f"AI efficiency: {after.value}",
                  f"Auto mode switched from {before.value} to {after.value}: {reason.removeprefix('auto: ')}",
                  "power-profile-balanced-symbolic")


# Thermal states from calmest to worst, as `StatusViews.thermal_state` names them.
_THERMAL_ORDER = ("cool", "warm", "hot", "critical")


def thermal_notice(previous: str | None, state: str, detail: str) -> Notice | None:
    """A notice when the machine got hot or critical, or cooled down from there; None for the
    first reading and for moves between cool and warm (not worth interrupting anyone)."""
    if previous is None or previous == state or state not in _THERMAL_ORDER or previous not in _THERMAL_ORDER:
        return None
    hot = _THERMAL_ORDER.index("hot")
    before, after = _THERMAL_ORDER.index(previous), _THERMAL_ORDER.index(state)
    if after >= hot and after > before:
        urgency = Urgency.CRITICAL if state == "critical" else Urgency.NORMAL
        return Notice(NoticeKind.THERMAL, f"The machine is {state}", f"{detail}. Inference moves to cooler "
                      "hardware where it can.", "dialog-warning-symbolic", urgency)
    if before >= hot > after:
        return Notice(NoticeKind.THERMAL, "The machine has cooled down", detail, "emblem-ok-symbolic", Urgency.LOW)
    return None


@dataclass(slots=True)
class NoticeLimiter:
    """At most one notice per kind per `interval_s`; a notice refused is dropped, not delayed
    (by the time it could go, a newer state has its own notice or none is due)."""

    interval_s: float = NOTICE_INTERVAL_S
    _last: dict[NoticeKind, float] = field(default_factory=dict)

    def allow(self, kind: NoticeKind, now: float) -> bool:
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            return False
        self._last[kind] = now
        return True
