"""Automatic efficiency mode: turn a system snapshot into the concrete mode `auto` stands for.

Rules, first match wins:

1. battery below `battery_low_percent` and discharging -> ultra-efficiency
2. on battery                                          -> efficiency
3. hot (CPU package or GPU), or throttling             -> quiet
4. fans at or above `fan_high_rpm`                     -> quiet
5. otherwise (on AC and cool)                          -> balanced

Rule 5 picks balanced, not performance: balanced already prefers the fast backend when nothing
argues against it, and a performance pick on a cool machine is exactly what heats it up, so
auto would swing between the two extremes (performance, then quiet) instead of settling.
Users who want performance set it explicitly.

Two things keep it from flapping. Hysteresis: "hot" starts at `hot_celsius` and ends only below
`cool_celsius`; "fans loud" ends only below 90% of `fan_high_rpm`. Dwell: once switched, the
mode holds for `min_dwell_s` whatever the readings say.

Pure: the clock is the `now` argument; this module must not know how readings are taken, nor
what the router does with a mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ollama_proxy.core.modes import EfficiencyMode
from ollama_proxy.core.system.telemetry import PowerState, SystemSnapshot
from ollama_proxy.core.system.thermal import ThermalThresholds, cpu_package_probe, gpu_probe

# Fan speed hovers around any fixed threshold under steady load; release a little below it.
FAN_RELEASE_RATIO = 0.9

# What `auto` acts as before the first snapshot, matching the router's pre-system default.
FALLBACK_MODE = EfficiencyMode.BALANCED


class AutoThresholds(ThermalThresholds, Protocol):
    """The part of `SystemConfig` auto mode reads (SystemConfig satisfies it as is)."""

    @property
    def battery_low_percent(self) -> float: ...
    @property
    def fan_high_rpm(self) -> float: ...
    @property
    def min_dwell_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class AutoState:
    """What auto mode decided last, when it switched, and the hysteresis latches.

    Start from `AutoState()` and feed each result back in as `previous`.
    """

    mode: EfficiencyMode | None = None
    reason: str = "no system readings yet"
    since: float = 0.0
    hot: bool = False
    fans_loud: bool = False


def resolve_auto_mode(
    snapshot: SystemSnapshot, thresholds: AutoThresholds, previous: AutoState, now: float
) -> tuple[EfficiencyMode, str, AutoState]:
    """Decide the mode `auto` means now; returns (mode, reason, state to pass next time)."""
    hot, heat = _heat(snapshot, thresholds, previous.hot)
    fans_loud, fans = _fans(snapshot, thresholds, previous.fans_loud)
    wanted, why = _wanted(snapshot.power, thresholds, hot, heat, fans_loud, fans)
    mode, reason, since = wanted, why, now
    if previous.mode == wanted:
        since = previous.since
    elif previous.mode is not None and now - previous.since < thresholds.min_dwell_s:
        mode, since = previous.mode, previous.since
        reason = (f"holding {previous.mode} for the {thresholds.min_dwell_s:g}s minimum dwell "
                  f"(wants {wanted}: {why})")
    return mode, reason, AutoState(mode, reason, since, hot, fans_loud)


def effective_mode(set_mode: EfficiencyMode, auto: AutoState | None) -> tuple[EfficiencyMode, str]:
    """The mode the router should use and why, for GET /efficiency and X-Routing-Reason."""
    if set_mode is not EfficiencyMode.AUTO:
        return set_mode, f"set to {set_mode}"
    if auto is None or auto.mode is None:
        return FALLBACK_MODE, f"auto: no system readings yet, acting as {FALLBACK_MODE}"
    return auto.mode, f"auto: {auto.reason}"


def _wanted(
    power: PowerState, t: AutoThresholds, hot: bool, heat: str, fans_loud: bool, fans: str
) -> tuple[EfficiencyMode, str]:
    percent = power.battery_percent
    if power.on_battery and percent is not None and percent < t.battery_low_percent:
        return (EfficiencyMode.ULTRA_EFFICIENCY,
                f"battery {percent:.0f}% < low {t.battery_low_percent:.0f}% and discharging")
    if power.on_battery:
        level = f" ({percent:.0f}%)" if percent is not None else ""
        return EfficiencyMode.EFFICIENCY, f"on battery{level}"
    if hot:
        return EfficiencyMode.QUIET, heat
    if fans_loud:
        return EfficiencyMode.QUIET, fans
    source = "on AC" if power.on_ac else "on mains (no battery)" if percent is None else "not discharging"
    return EfficiencyMode.BALANCED, f"{source} and cool ({heat})"


def _heat(snapshot: SystemSnapshot, t: AutoThresholds, was_hot: bool) -> tuple[bool, str]:
    """Hot latch over the CPU package and GPU: set at hot_celsius or throttling, cleared below cool."""
    probes = [p for p in (cpu_package_probe(snapshot), gpu_probe(snapshot)) if p is not None]
    if not probes:
        return False, "no temperature sensors"
    throttled = next((p for p in probes if p.throttle), None)
    if throttled is not None:
        return True, f"{throttled.label} {throttled.celsius:.0f}C: throttling ({throttled.throttle})"
    hottest = max(probes, key=lambda p: p.celsius)
    at = f"{hottest.label} {hottest.celsius:.0f}C"
    if hottest.celsius >= t.hot_celsius:
        return True, f"{at} >= hot {t.hot_celsius:.0f}C"
    if was_hot and hottest.celsius >= t.cool_celsius:
        return True, f"{at} not yet below cool {t.cool_celsius:.0f}C after running hot"
    return False, at


def _fans(snapshot: SystemSnapshot, t: AutoThresholds, were_loud: bool) -> tuple[bool, str]:
    if not snapshot.fans:
        return False, "no fan readings"
    fan = max(snapshot.fans, key=lambda f: f.rpm)
    at = f"fan {fan.chip} {fan.label} {fan.rpm:.0f} rpm"
    if fan.rpm >= t.fan_high_rpm:
        return True, f"{at} >= high {t.fan_high_rpm:.0f} rpm"
    release = t.fan_high_rpm * FAN_RELEASE_RATIO
    if were_loud and fan.rpm >= release:
        return True, f"{at} not yet below {release:.0f} rpm after running high"
    return False, at
