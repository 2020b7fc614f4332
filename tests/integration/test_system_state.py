"""System state end to end (issue 7): the proxy reads a fake laptop's sysfs tree and a fake nvidia-smi.

The battery drains and the CPU heats while the proxy runs (`system.poll_interval_s` is short);
GET /efficiency, GET /thermal, /backends and the routing decisions must follow. Each routing check
asks for a model no backend has served yet: learned latency and residency rightly favour a backend
that has served a model, and here only the machine's state may change the pick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fleet import LAPTOP, Fleet, chat, start_fleet

from ollama_proxy.app import start
from ollama_proxy.config.load import validate

# One fresh model per routing check (see the module docstring).
FRESH_MODELS = [f"step{i}:1b" for i in range(8)]
# nvidia-smi's clocks_throttle_reasons.active bit for "hw thermal slowdown".
HW_THERMAL_SLOWDOWN = 0x40


class Laptop:
    """A fake sysfs tree plus a fake nvidia-smi, rewritten while the proxy samples them."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "sys"
        self.gpu_csv = tmp_path / "gpu.csv"
        self.gpu_csv.write_text("")
        self.nvidia_smi = tmp_path / "nvidia-smi"
        # The query arguments are ignored: the script prints whatever the test last wrote.
        self.nvidia_smi.write_text(f"#!/bin/sh\ncat '{self.gpu_csv}'\n")
        self.nvidia_smi.chmod(self.nvidia_smi.stat().st_mode | stat.S_IXUSR)

    def write(self, relative: str, value: object) -> None:
        # Atomic, so a sample taken mid-write never sees a half-written number.
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(f"{value}\n")
        os.replace(tmp, path)

    def power(self, *, plugged: bool, percent: int) -> None:
        self.write("class/power_supply/AC/type", "Mains")
        self.write("class/power_supply/AC/online", int(plugged))
        self.write("class/power_supply/BAT0/type", "Battery")
        self.write("class/power_supply/BAT0/capacity", percent)
        self.write("class/power_supply/BAT0/status", "Charging" if plugged else "Discharging")

    def cpu(self, celsius: float, *, crit: float = 100.0) -> None:
        self.write("class/hwmon/hwmon0/name", "coretemp")
        self.write("class/hwmon/hwmon0/temp1_label", "Package id 0")
        self.write("class/hwmon/hwmon0/temp1_crit", int(crit * 1000))
        self.write("class/hwmon/hwmon0/temp1_input", int(celsius * 1000))

    def gpu(self, celsius: float, throttle: int = 0) -> None:
        tmp = self.gpu_csv.with_suffix(".tmp")
        tmp.write_text(f"0, RTX 4070 Laptop, {celsius:g}, 40.0, 35, 20, {throttle:#018x}\n")
        os.replace(tmp, self.gpu_csv)

    def system_config(self, **overrides: Any) -> dict[str, Any]:
        return {"sysfs_root": str(self.root), "nvidia_smi": str(self.nvidia_smi), "poll_interval_s": 0.05,
                "min_dwell_s": 0, **overrides}


@pytest.fixture
def laptop(tmp_path: Path) -> Laptop:
    machine = Laptop(tmp_path)
    machine.power(plugged=True, percent=80)
    machine.cpu(50)
    machine.gpu(45)
    return machine


@pytest.fixture
def fleet_factory(sim_factory: Callable[..., Any], proxy_factory: Callable[..., Any],
                  laptop: Laptop) -> Callable[..., Any]:
    """The four-backend fleet reading `laptop`; `system` overrides go on top of its config."""
    async def make(*, system: dict[str, Any] | None = None, **kwargs: Any) -> Fleet:
        return await start_fleet(sim_factory, proxy_factory, extra_models=dict.fromkeys(LAPTOP, FRESH_MODELS),
                                 system=laptop.system_config(**(system or {})), **kwargs)

    return make


async def sampled(fleet: Fleet, *, battery: float | None = None, cpu: float | None = None,
                  gpu: float | None = None) -> dict[str, Any]:
    """Wait until the proxy's monitor has taken a sample showing these readings; returns /thermal."""
    report: dict[str, Any] = {}

    async def shows() -> bool:
        nonlocal report
        report = await fleet.get("/thermal")
        if "sensors" not in report:
            return False
        temps = {s["label"]: s["celsius"] for s in report["sensors"]["hwmon"]}
        gpus = [g["celsius"] for g in report["sensors"]["gpus"]]
        return ((battery is None or report["power"]["battery_percent"] == battery)
                and (cpu is None or temps.get("Package id 0") == cpu)
                and (gpu is None or gpus == [gpu]))

    await fleet.wait_for(shows, f"a sample with battery={battery} cpu={cpu} gpu={gpu}")
    return report


AUTO_STEPS = [  # (plugged, battery %, cpu C) -> effective mode, backends it may pick, words of the reason
    pytest.param(True, 80, 50, "balanced", {"igpu"}, "on AC and cool", id="ac-cool-balanced"),
    pytest.param(False, 60, 50, "efficiency", {"npu"}, "on battery (60%)", id="unplugged-efficiency"),
    pytest.param(False, 15, 50, "ultra-efficiency", {"npu"}, "battery 15% < low 20%", id="battery-low-ultra"),
    pytest.param(True, 30, 90, "quiet", {"npu", "igpu"}, ">= hot 80C", id="plugged-hot-quiet"),
    pytest.param(True, 35, 75, "quiet", {"npu", "igpu"}, "not yet below cool", id="hysteresis-holds-quiet"),
    pytest.param(True, 40, 60, "balanced", {"igpu"}, "on AC and cool", id="cooled-down-balanced"),
]


async def test_auto_mode_follows_a_draining_battery_and_a_heating_cpu(
        fleet_factory: Callable[..., Any], laptop: Laptop, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ollama_proxy.adapters.sysfs.monitor")
    fleet = await fleet_factory(router={"default_mode": "auto"})
    for model, step in zip(FRESH_MODELS, AUTO_STEPS, strict=False):
        plugged, percent, cpu_c, mode, picks, because = step.values
        laptop.cpu(cpu_c)
        laptop.power(plugged=plugged, percent=percent)
        await sampled(fleet, battery=percent, cpu=cpu_c)
        efficiency = await fleet.get("/efficiency")
        assert (efficiency["mode"], efficiency["effective_mode"]) == ("auto", mode), step.id
        assert because in efficiency["reason"], (step.id, efficiency["reason"])
        status, out, _ = await chat(fleet.url, model=model)
        assert status == 200
        assert out["X-Backend-Used"] in picks, (step.id, out["X-Routing-Reason"])
        assert f"mode-{mode}" in out["X-Routing-Reason"].split("; ")[:2], step.id
    # Every switch was logged once, with its cause; the hysteresis step switched nothing.
    # Each switch logged at INFO (the first resolution, at start-up, is the start-up line's news).
    switches = [re.search(r"calls for (\S+) under auto mode \(was (\S+)\)", r.getMessage())
                for r in caplog.records if r.levelno == logging.INFO and "under auto mode" in r.getMessage()]
    assert [(m.group(2), m.group(1)) for m in switches if m] == [
        ("balanced", "efficiency"), ("efficiency", "ultra-efficiency"), ("ultra-efficiency", "quiet"),
        ("quiet", "balanced")]


async def test_minimum_dwell_holds_the_mode_and_says_so(fleet_factory: Callable[..., Any], laptop: Laptop) -> None:
    fleet = await fleet_factory(router={"default_mode": "auto"}, system={"min_dwell_s": 10})
    laptop.power(plugged=False, percent=60)
    await sampled(fleet, battery=60)
    efficiency = await fleet.get("/efficiency")
    assert efficiency["effective_mode"] == "balanced"
    assert "holding balanced for the 10s minimum dwell" in efficiency["reason"]
    assert "wants efficiency: on battery (60%)" in efficiency["reason"]


async def test_a_mode_set_by_hand_ignores_the_machine(fleet_factory: Callable[..., Any], laptop: Laptop) -> None:
    fleet = await fleet_factory(router={"default_mode": "performance"})
    laptop.power(plugged=False, percent=10)
    await sampled(fleet, battery=10)
    efficiency = await fleet.get("/efficiency")
    assert (efficiency["effective_mode"], efficiency["reason"]) == ("performance", "set to performance")
    _, out, _ = await chat(fleet.url, model=FRESH_MODELS[0])
    assert out["X-Backend-Used"] == "nvidia"


async def test_thermal_endpoint_shows_sensors_throttling_and_backends(fleet_factory: Callable[..., Any],
                                                                      laptop: Laptop) -> None:
    laptop.write("class/thermal/thermal_zone0/type", "x86_pkg_temp")
    laptop.write("class/thermal/thermal_zone0/temp", 88000)
    laptop.write("class/thermal/thermal_zone0/trip_point_0_type", "passive")
    laptop.write("class/thermal/thermal_zone0/trip_point_0_temp", 85000)
    laptop.write("class/hwmon/hwmon0/fan1_input", 2500)
    laptop.cpu(88)
    laptop.gpu(72)
    fleet = await fleet_factory()
    report = await sampled(fleet, cpu=88, gpu=72)
    assert report["sensors"]["thermal_zones"][0]["type"] == "x86_pkg_temp"
    assert report["fans"] == [{"chip": "coretemp", "device": "hwmon0", "label": "fan1", "rpm": 2500.0}]
    assert report["power"]["on_ac"] is True and report["power"]["battery_percent"] == 80
    assert [t["reason"] for t in report["throttling"]] == ["88C >= passive trip 85C"]
    backends = report["backends"]
    assert {b: backends[b]["level"] for b in LAPTOP} == {"npu": "hot", "igpu": "hot", "nvidia": "warm",
                                                         "cpu": "hot"}
    assert "RTX 4070 Laptop" in backends["nvidia"]["reason"]
    assert not any(b["excluded"] for b in backends.values())


async def test_critical_cpu_excludes_the_backends_on_its_die(fleet_factory: Callable[..., Any],
                                                             laptop: Laptop) -> None:
    fleet = await fleet_factory()
    laptop.cpu(101)
    await sampled(fleet, cpu=101)
    status, out, _ = await chat(fleet.url, model=FRESH_MODELS[0], headers={"X-Power-Efficient": "1"})
    assert (status, out["X-Backend-Used"]) == (200, "nvidia")
    assert "3 excluded" in out["X-Routing-Reason"]
    view = {b["id"]: b["thermal"] for b in (await fleet.get("/backends"))["backends"]}
    for backend in ("npu", "igpu", "cpu"):
        assert view[backend]["level"] == "critical"
        assert ">= critical 100C" in view[backend]["reason"]
    assert view["nvidia"]["level"] == "cool"
    served = await fleet.served()
    assert served == {b: int(b == "nvidia") for b in LAPTOP}


async def test_critical_gpu_is_excluded_even_for_latency_critical_work(fleet_factory: Callable[..., Any],
                                                                      laptop: Laptop) -> None:
    fleet = await fleet_factory()
    _, out, _ = await chat(fleet.url, model=FRESH_MODELS[0], headers={"X-Latency-Critical": "1"})
    assert out["X-Backend-Used"] == "nvidia"
    laptop.gpu(93, HW_THERMAL_SLOWDOWN)
    await sampled(fleet, gpu=93)
    _, out, _ = await chat(fleet.url, model=FRESH_MODELS[1], headers={"X-Latency-Critical": "1"})
    assert out["X-Backend-Used"] != "nvidia"
    assert "1 excluded" in out["X-Routing-Reason"]
    nvidia = next(b for b in (await fleet.get("/backends"))["backends"] if b["id"] == "nvidia")
    assert nvidia["thermal"]["level"] == "critical"
    assert "hw thermal slowdown" in nvidia["thermal"]["reason"]


async def test_hot_gpu_is_scored_down(sim_factory: Callable[..., Any], proxy_factory: Callable[..., Any],
                                      laptop: Laptop) -> None:
    # Two close backends: when cool the GPU wins narrowly, and its heat alone must tip the balance.
    sims = {hw: await sim_factory(profile=hw, models=FRESH_MODELS) for hw in ("nvidia", "igpu")}
    characteristics = {"nvidia": {"power_watts": 10, "avg_latency_ms": 300},
                       "igpu": {"power_watts": 12, "avg_latency_ms": 400}}
    url = await proxy_factory({
        "backends": [{"id": hw, "hardware": hw, "endpoint": sim.url, "characteristics": characteristics[hw]}
                     for hw, sim in sims.items()],
        "system": laptop.system_config(),
    })
    fleet = Fleet(url, sims)
    await sampled(fleet, gpu=45)
    _, out, _ = await chat(url, model=FRESH_MODELS[0])
    assert out["X-Backend-Used"] == "nvidia"
    laptop.gpu(86)
    await sampled(fleet, gpu=86)
    _, out, _ = await chat(url, model=FRESH_MODELS[1])
    assert out["X-Backend-Used"] == "igpu"
    assert "cooler" in out["X-Routing-Reason"]
    nvidia = next(b for b in (await fleet.get("/backends"))["backends"] if b["id"] == "nvidia")
    assert nvidia["thermal"] == {"level": "hot", "temp_c": 86.0, "reason": nvidia["thermal"]["reason"]}
    assert ">= hot 80C" in nvidia["thermal"]["reason"]


async def test_proxy_starts_and_routes_against_this_machines_real_sys(
        sim_factory: Callable[..., Any], proxy_factory: Callable[..., Any]) -> None:
    sim = await sim_factory(profile="cpu")
    url = await proxy_factory({"backends": [{"id": "local", "hardware": "cpu", "endpoint": sim.url}],
                               "router": {"default_mode": "auto"}})
    fleet = Fleet(url, {"local": sim})
    thermal = await fleet.get("/thermal")
    # Whatever this machine has (a container may have no sensors at all), the shape is complete.
    assert set(thermal["sensors"]) == {"thermal_zones", "hwmon", "gpus"}
    assert thermal["backends"]["local"]["level"] in {"cool", "warm", "hot", "critical"}
    efficiency = await fleet.get("/efficiency")
    assert efficiency["mode"] == "auto"
    assert efficiency["effective_mode"] in {"balanced", "efficiency", "ultra-efficiency", "quiet"}
    assert efficiency["reason"].startswith("auto: ")
    status, out, _ = await chat(url)
    assert (status, out["X-Backend-Used"]) == (200, "local")


async def test_stopping_mid_query_leaves_no_nvidia_smi_behind(sim_factory: Callable[..., Any], laptop: Laptop,
                                                             tmp_path: Path) -> None:
    # The first query answers (start-up samples once before serving); the next one hangs.
    pid_file = tmp_path / "hung.pid"
    laptop.nvidia_smi.write_text(f"""#!/bin/sh
if [ -e '{tmp_path}/answered' ]; then echo $$ > '{pid_file}'; exec sleep 60; fi
touch '{tmp_path}/answered'
cat '{laptop.gpu_csv}'
""")
    sim = await sim_factory()
    runner = await start(validate({"backends": [{"id": "sim", "endpoint": sim.url}],
                                   "system": laptop.system_config()}), host="127.0.0.1", port=0)
    try:
        for _ in range(600):
            if pid_file.exists() and pid_file.read_text().strip():
                break
            await asyncio.sleep(0.02)
        pid = int(pid_file.read_text())
    finally:
        await runner.cleanup()
    try:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
