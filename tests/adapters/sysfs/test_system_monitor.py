"""SystemMonitor against a fake sysfs tree that changes between samples, and against the real /sys."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fake_sysfs import FakeSysfs, make_script

from ollama_proxy.adapters.sysfs import ModeChange, SystemMonitor, take_snapshot
from ollama_proxy.config.schema import BackendConfig, SystemConfig
from ollama_proxy.core.modes import EfficiencyMode as M
from ollama_proxy.core.system.efficiency import effective_mode
from ollama_proxy.core.system.telemetry import SystemSnapshot
from ollama_proxy.core.system.thermal import thermal_report


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def laptop(sysfs: FakeSysfs, *, plugged: bool, percent: int, cpu_c: float) -> None:
    sysfs.supply("AC", type="Mains", online=int(plugged))
    sysfs.supply("BAT0", type="Battery", capacity=percent, status="Charging" if plugged else "Discharging")
    sysfs.hwmon(1, "coretemp", {1: (int(cpu_c * 1000), "Package id 0", 100000)})


def config(sysfs: FakeSysfs, tmp_path: Path, **overrides: object) -> SystemConfig:
    smi = make_script(tmp_path / "nvidia-smi", "echo '0, RTX 4070, 55, 30.5, 30, 10, 0x0000000000000001'")
    return SystemConfig(sysfs_root=str(sysfs.root), nvidia_smi=str(smi), **overrides)


async def test_auto_mode_follows_the_machine(sysfs: FakeSysfs, tmp_path: Path) -> None:
    clock = FakeClock()
    monitor = SystemMonitor(config(sysfs, tmp_path, min_dwell_s=10), clock=clock)
    events: list[ModeChange] = []
    monitor.subscribe(events.append)

    steps = [  # (seconds later, plugged, battery %, cpu C)
        (0, True, 100, 50), (15, False, 90, 50), (15, False, 50, 50), (15, False, 19, 50),
        (15, True, 19, 85), (5, True, 25, 60), (15, True, 30, 60),
    ]
    modes = []
    for delay, plugged, percent, cpu_c in steps:
        clock.now += delay
        laptop(sysfs, plugged=plugged, percent=percent, cpu_c=cpu_c)
        snapshot = await monitor.sample_once()
        assert snapshot.taken_at == clock.now
        modes.append(monitor.auto_state.mode)

    # The step 5 s after the switch to quiet is held by the 10 s dwell.
    assert modes == [M.BALANCED, M.EFFICIENCY, M.EFFICIENCY, M.ULTRA_EFFICIENCY, M.QUIET, M.QUIET, M.BALANCED]
    assert [(e.previous, e.mode) for e in events] == [
        (None, M.BALANCED), (M.BALANCED, M.EFFICIENCY), (M.EFFICIENCY, M.ULTRA_EFFICIENCY),
        (M.ULTRA_EFFICIENCY, M.QUIET), (M.QUIET, M.BALANCED)]
    assert events[2].reason == "battery 19% < low 20% and discharging"
    assert events[3].at == 1060.0
    assert effective_mode(M.AUTO, monitor.auto_state)[0] == M.BALANCED
    assert monitor.snapshot is not None and monitor.snapshot.gpus[0].name == "RTX 4070"


async def test_listeners_unsubscribe_and_a_failing_one_does_not_stop_others(
        sysfs: FakeSysfs, tmp_path: Path) -> None:
    clock = FakeClock()
    monitor = SystemMonitor(config(sysfs, tmp_path, min_dwell_s=0), clock=clock)
    seen: list[M] = []
    dropped: list[M] = []

    def broken(change: ModeChange) -> None:
        raise RuntimeError("listener bug")

    monitor.subscribe(broken)
    unsubscribe = monitor.subscribe(lambda change: dropped.append(change.mode))
    monitor.subscribe(lambda change: seen.append(change.mode))

    laptop(sysfs, plugged=True, percent=100, cpu_c=50)
    await monitor.sample_once()
    unsubscribe()
    unsubscribe()  # a second call is harmless
    clock.now += 1
    laptop(sysfs, plugged=False, percent=80, cpu_c=50)
    await monitor.sample_once()

    assert seen == [M.BALANCED, M.EFFICIENCY]
    assert dropped == [M.BALANCED]


async def test_context_manager_samples_at_once_then_polls_until_closed(
        sysfs: FakeSysfs, tmp_path: Path) -> None:
    laptop(sysfs, plugged=True, percent=100, cpu_c=50)
    monitor = SystemMonitor(config(sysfs, tmp_path, poll_interval_s=0.02, min_dwell_s=0))
    changed = asyncio.Event()
    monitor.subscribe(lambda change: changed.set() if change.mode == M.EFFICIENCY else None)

    async with monitor:
        assert monitor.auto_state.mode == M.BALANCED
        laptop(sysfs, plugged=False, percent=80, cpu_c=50)
        await asyncio.wait_for(changed.wait(), 5)

    last = monitor.snapshot
    laptop(sysfs, plugged=True, percent=80, cpu_c=50)
    await asyncio.sleep(0.1)
    assert monitor.snapshot is last  # no sampling after exit


async def test_real_sys_degrades_gracefully() -> None:
    # This machine may have no sensors at all; the point is that nothing raises.
    snapshot = await take_snapshot(SystemConfig())
    assert isinstance(snapshot, SystemSnapshot)
    async with SystemMonitor(SystemConfig(poll_interval_s=60)) as monitor:
        assert monitor.snapshot is not None and monitor.auto_state.mode is not None
    backend = BackendConfig(id="local", hardware="cpu", endpoint="http://127.0.0.1:11434")
    json.dumps(thermal_report(snapshot, [backend], SystemConfig()))
