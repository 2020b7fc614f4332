"""Auto efficiency mode: the rules, hysteresis, dwell time and the effective mode."""

from __future__ import annotations

import pytest

from ollama_proxy.config.schema import SystemConfig
from ollama_proxy.core.modes import EfficiencyMode as M
from ollama_proxy.core.system.efficiency import AutoState, effective_mode, resolve_auto_mode
from ollama_proxy.core.system.telemetry import (
    BatteryStatus,
    FanReading,
    GpuReading,
    HwmonSensor,
    PowerState,
    SystemSnapshot,
    ThermalZone,
    TripKind,
    TripPoint,
)

CFG = SystemConfig(battery_low_percent=20, hot_celsius=80, cool_celsius=70, fan_high_rpm=4000, min_dwell_s=10)
NO_DWELL = CFG.model_copy(update={"min_dwell_s": 0})

AC = PowerState(on_ac=True, battery_percent=100, battery_status=BatteryStatus.FULL)
DESKTOP = PowerState()


def battery(percent: float, *, plugged: bool = False) -> PowerState:
    status = BatteryStatus.CHARGING if plugged else BatteryStatus.DISCHARGING
    return PowerState(on_ac=plugged, battery_percent=percent, battery_status=status)


def snap(t: float = 0.0, *, power: PowerState = AC, cpu: float | None = 50.0, fan: float | None = None,
         zones: tuple[ThermalZone, ...] = (), gpus: tuple[GpuReading, ...] = ()) -> SystemSnapshot:
    sensors = (HwmonSensor("coretemp", "hwmon1", "Package id 0", cpu, 100.0),) if cpu is not None else ()
    fans = (FanReading("thinkpad", "hwmon2", "fan1", fan),) if fan is not None else ()
    return SystemSnapshot(t, zones, sensors, fans, power, gpus)


def run(snapshots: list[SystemSnapshot], cfg: SystemConfig = CFG) -> list[tuple[float, M, str]]:
    """Feed snapshots in order; return (time, mode, reason) after each."""
    state, out = AutoState(), []
    for s in snapshots:
        mode, reason, state = resolve_auto_mode(s, cfg, state, s.taken_at)
        assert state.mode == mode and state.reason == reason
        out.append((s.taken_at, mode, reason))
    return out


def switches(results: list[tuple[float, M, str]]) -> list[tuple[float, M]]:
    changes, last = [], None
    for t, mode, _ in results:
        if mode != last:
            changes.append((t, mode))
            last = mode
    return changes


@pytest.mark.parametrize(("snapshot", "mode", "reason_part"), [
    pytest.param(snap(power=battery(15)), M.ULTRA_EFFICIENCY, "battery 15% < low 20%", id="battery-low"),
    pytest.param(snap(power=battery(50)), M.EFFICIENCY, "on battery (50%)", id="on-battery"),
    pytest.param(snap(power=battery(15, plugged=True)), M.BALANCED, "on AC", id="low-but-charging"),
    pytest.param(snap(power=battery(50), cpu=95), M.EFFICIENCY, "on battery", id="battery-beats-heat"),
    pytest.param(snap(cpu=85), M.QUIET, "Package id 0) 85C >= hot 80C", id="hot-cpu"),
    pytest.param(snap(fan=4500), M.QUIET, "fan1 4500 rpm >= high 4000 rpm", id="loud-fan"),
    pytest.param(snap(cpu=60), M.BALANCED, "on AC and cool", id="ac-cool"),
    pytest.param(snap(power=DESKTOP, cpu=None), M.BALANCED, "no temperature sensors", id="desktop-bare"),
    pytest.param(snap(power=PowerState(battery_percent=10, battery_status=BatteryStatus.DISCHARGING)),
                 M.ULTRA_EFFICIENCY, "discharging", id="no-mains-reading-discharging"),
    pytest.param(snap(cpu=None, zones=(ThermalZone("thermal_zone0", "acpitz", 72,
                                                   (TripPoint(TripKind.PASSIVE, 71),)),)),
                 M.QUIET, "throttling (passive trip 71C)", id="passive-trip-below-hot"),
    pytest.param(snap(gpus=(GpuReading(0, "RTX", 75, throttle_reasons=0x20),)), M.QUIET,
                 "sw thermal slowdown", id="gpu-thermal-slowdown"),
    pytest.param(snap(gpus=(GpuReading(0, "RTX", 60, throttle_reasons=0x4),)), M.BALANCED,
                 "cool", id="gpu-power-cap-is-not-heat"),
])
def test_first_decision(snapshot: SystemSnapshot, mode: M, reason_part: str) -> None:
    got, reason, state = resolve_auto_mode(snapshot, CFG, AutoState(), now=0.0)
    assert (got, state.since) == (mode, 0.0)
    assert reason_part in reason


def test_follows_a_draining_battery() -> None:
    timeline = [snap(0, power=AC)]
    timeline += [snap(30 + 30 * i, power=battery(95 - 5 * i)) for i in range(17)]  # 95% .. 15%
    timeline.append(snap(600, power=battery(15, plugged=True)))

    changes = switches(run(timeline))

    assert changes == [(0, M.BALANCED), (30, M.EFFICIENCY), (510, M.ULTRA_EFFICIENCY), (600, M.BALANCED)]


def test_cpu_heating_up_and_cooling_does_not_flap() -> None:
    temps = [60, 75, 79, 81, 79, 78, 82, 76, 72, 71, 69.5, 68, 72, 79, 78]
    results = run([snap(20.0 * i, cpu=c) for i, c in enumerate(temps)])

    # Hot from 81C, cool again only below 70C; the wobble around 80C and the rise back to 79C do not flip it.
    assert switches(results) == [(0, M.BALANCED), (60, M.QUIET), (200, M.BALANCED)]
    assert "not yet below cool 70C after running hot" in results[4][2]


def test_fan_release_is_below_the_threshold() -> None:
    results = run([snap(20.0 * i, fan=rpm) for i, rpm in enumerate([3000, 4100, 3900, 3700, 3500])])
    assert switches(results) == [(0, M.BALANCED), (20, M.QUIET), (80, M.BALANCED)]


def test_dwell_holds_a_new_mode() -> None:
    results = run([snap(0, cpu=85), snap(3, cpu=50), snap(9.9, cpu=50), snap(10, cpu=50)])

    assert [mode for _, mode, _ in results] == [M.QUIET, M.QUIET, M.QUIET, M.BALANCED]
    assert "holding quiet for the 10s minimum dwell (wants balanced" in results[1][2]


def test_dwell_counts_from_the_last_switch_not_the_last_sample() -> None:
    # A steady mode re-confirmed at t=20 keeps since=0, so a change at t=21 is not held.
    results = run([snap(0), snap(20), snap(21, power=battery(50))])
    assert [mode for _, mode, _ in results] == [M.BALANCED, M.BALANCED, M.EFFICIENCY]


def test_zero_dwell_switches_at_once() -> None:
    results = run([snap(0, cpu=85), snap(0.1, cpu=50)], NO_DWELL)
    assert [mode for _, mode, _ in results] == [M.QUIET, M.BALANCED]


def test_hot_latch_survives_a_held_switch() -> None:
    # While dwell holds efficiency, the latch still learns the CPU ran hot; on AC at 75C it is quiet.
    results = run([snap(0, power=battery(50)), snap(5, power=battery(50), cpu=85), snap(11, cpu=75)])
    assert [mode for _, mode, _ in results] == [M.EFFICIENCY, M.EFFICIENCY, M.QUIET]


@pytest.mark.parametrize(("set_mode", "auto", "expected"), [
    pytest.param(M.PERFORMANCE, AutoState(M.QUIET, "hot", 0.0), (M.PERFORMANCE, "set to performance"),
                 id="explicit-wins"),
    pytest.param(M.AUTO, None, (M.BALANCED, "auto: no system readings yet, acting as balanced"),
                 id="auto-before-readings"),
    pytest.param(M.AUTO, AutoState(), (M.BALANCED, "auto: no system readings yet, acting as balanced"),
                 id="auto-initial-state"),
    pytest.param(M.AUTO, AutoState(M.QUIET, "cpu 85C >= hot 80C", 0.0), (M.QUIET, "auto: cpu 85C >= hot 80C"),
                 id="auto-resolved"),
])
def test_effective_mode(set_mode: M, auto: AutoState | None, expected: tuple[M, str]) -> None:
    assert effective_mode(set_mode, auto) == expected
