"""Throttling detection, per-backend thermal classification and the GET /thermal body."""

from __future__ import annotations

import json

import pytest

from ollama_proxy.config.schema import BackendConfig, Hardware, SystemConfig
from ollama_proxy.core.routing.state import ThermalLevel as L
from ollama_proxy.core.system.telemetry import (
    FanReading,
    GpuReading,
    HwmonSensor,
    SystemSnapshot,
    ThermalZone,
    TripKind,
    TripPoint,
)
from ollama_proxy.core.system.thermal import backend_thermal, detect_throttling, reached_trip, thermal_report

CFG = SystemConfig(hot_celsius=80, cool_celsius=70)
ACPI_TRIPS = (TripPoint(TripKind.ACTIVE, 60), TripPoint(TripKind.PASSIVE, 90),
              TripPoint(TripKind.CRITICAL, 105))


def backend(hardware: Hardware, endpoint: str = "http://127.0.0.1:11434") -> BackendConfig:
    return BackendConfig(id=f"{hardware}-1", hardware=hardware, endpoint=endpoint)


def package(celsius: float, chip: str = "coretemp", label: str = "Package id 0",
            crit: float | None = 100.0) -> HwmonSensor:
    return HwmonSensor(chip, "hwmon3", label, celsius, crit)


def zone(celsius: float, kind: str = "acpitz", trips: tuple[TripPoint, ...] = ACPI_TRIPS) -> ThermalZone:
    return ThermalZone("thermal_zone0", kind, celsius, trips)


def gpu(celsius: float | None, throttle: int | None = 0) -> GpuReading:
    return GpuReading(0, "NVIDIA GeForce RTX 4070", celsius, 90.0, 40.0, 99.0, throttle)


@pytest.mark.parametrize(("celsius", "expected"), [
    pytest.param(65, None, id="active-trip-is-cooling-not-throttling"),
    pytest.param(89.9, None, id="below-passive"),
    pytest.param(90, TripKind.PASSIVE, id="at-passive"),
    pytest.param(106, TripKind.CRITICAL, id="hottest-reached-wins"),
])
def test_reached_trip(celsius: float, expected: TripKind | None) -> None:
    trip = reached_trip(zone(celsius))
    assert (trip.kind if trip else None) == expected


def test_detect_throttling_names_zones_and_gpu_slowdowns() -> None:
    snapshot = SystemSnapshot(0.0, zones=(zone(95), zone(50, "x86_pkg_temp")),
                              gpus=(gpu(70, 0x4 | 0x40), GpuReading(1, "idle", 40, throttle_reasons=0x1)))
    found = [(t.source, t.reason) for t in detect_throttling(snapshot)]
    assert found == [("thermal_zone0 (acpitz)", "95C >= passive trip 90C"),
                     ("gpu0 (NVIDIA GeForce RTX 4070)", "sw power cap, hw thermal slowdown")]


@pytest.mark.parametrize(("hardware", "snapshot", "level", "reason"), [
    pytest.param(Hardware.CPU, SystemSnapshot(0, sensors=(package(55),)), L.COOL,
                 "cpu package (coretemp Package id 0) 55C < warm 70C", id="cpu-cool"),
    pytest.param(Hardware.IGPU, SystemSnapshot(0, sensors=(package(75),)), L.WARM,
                 "cpu package (coretemp Package id 0) 75C >= warm 70C", id="igpu-warm"),
    pytest.param(Hardware.CPU, SystemSnapshot(0, sensors=(package(91),)), L.HOT,
                 "cpu package (coretemp Package id 0) 91C >= hot 80C", id="cpu-hot"),
    pytest.param(Hardware.NPU, SystemSnapshot(0, sensors=(package(100),)), L.CRITICAL,
                 "cpu package (coretemp Package id 0) 100C >= critical 100C", id="npu-at-crit"),
    pytest.param(Hardware.CPU, SystemSnapshot(0, sensors=(package(60, "k10temp", "Tctl", None),
                                                          package(45, "k10temp", "Tdie", None))),
                 L.COOL, "(k10temp Tdie) 45C", id="tdie-preferred-over-offset-tctl"),
    pytest.param(Hardware.CPU, SystemSnapshot(0, sensors=(package(72, "coretemp", "Package id 0"),
                                                          package(85, "coretemp", "Package id 1"))),
                 L.HOT, "Package id 1) 85C", id="hottest-package"),
    pytest.param(Hardware.CPU, SystemSnapshot(0, sensors=(package(95, "coretemp", "Core 0"),)), L.COOL,
                 "no temperature sensor", id="core-sensor-is-not-package"),
    pytest.param(Hardware.CPU, SystemSnapshot(0, zones=(zone(50), zone(77, "x86_pkg_temp", ()))), L.WARM,
                 "cpu package (x86_pkg_temp) 77C", id="pkg-zone-preferred-over-acpitz"),
    pytest.param(Hardware.CPU, SystemSnapshot(0, zones=(zone(76, trips=(TripPoint(TripKind.PASSIVE, 75),)),)),
                 L.HOT, "76C: throttling (passive trip 75C)", id="zone-throttling-below-hot"),
    pytest.param(Hardware.CPU, SystemSnapshot(0, zones=(zone(106),)), L.CRITICAL,
                 "106C >= critical 105C", id="zone-critical-trip"),
    pytest.param(Hardware.NVIDIA, SystemSnapshot(0, sensors=(package(95),), gpus=(gpu(50),)), L.COOL,
                 "gpu0 (NVIDIA GeForce RTX 4070) temperature 50C < warm 70C", id="nvidia-reads-gpu-not-cpu"),
    pytest.param(Hardware.NVIDIA, SystemSnapshot(0, gpus=(gpu(72, 0x20),)), L.HOT,
                 "72C: throttling (sw thermal slowdown)", id="nvidia-sw-thermal"),
    pytest.param(Hardware.NVIDIA, SystemSnapshot(0, gpus=(gpu(88, 0x40),)), L.CRITICAL,
                 "88C: hw thermal slowdown", id="nvidia-hw-thermal-is-critical"),
    pytest.param(Hardware.NVIDIA, SystemSnapshot(0, gpus=(gpu(None),)), L.COOL,
                 "no temperature sensor", id="nvidia-temp-na"),
    pytest.param(Hardware.OTHER, SystemSnapshot(0, sensors=(package(99),)), L.COOL,
                 "no sensor is mapped to 'other'", id="other-hardware"),
])
def test_backend_thermal(hardware: Hardware, snapshot: SystemSnapshot, level: L, reason: str) -> None:
    state = backend_thermal(backend(hardware), snapshot, CFG)
    assert state.level == level
    assert reason in state.reason
    assert state.excluded == (level == L.CRITICAL)


def test_remote_backend_ignores_local_sensors() -> None:
    state = backend_thermal(backend(Hardware.CPU, "http://gpu-box.lan:11434"), SystemSnapshot(
        0, sensors=(package(100),)), CFG)
    assert (state.level, state.celsius, state.penalty) == (L.COOL, None, 0.0)
    assert "remote" in state.reason


@pytest.mark.parametrize(("celsius", "penalty"), [
    pytest.param(50, 0.0, id="cool"), pytest.param(75, 0.2, id="warm"),
    pytest.param(85, 0.6, id="hot"), pytest.param(101, 1.0, id="critical"),
])
def test_penalty_grows_with_heat(celsius: float, penalty: float) -> None:
    state = backend_thermal(backend(Hardware.CPU), SystemSnapshot(0, sensors=(package(celsius),)), CFG)
    assert state.penalty == penalty
    assert state.state.level == state.level and state.state.temp_c == celsius


def test_thermal_report_is_json_and_complete() -> None:
    snapshot = SystemSnapshot(
        10.0, zones=(zone(95),), sensors=(package(85),),
        fans=(FanReading("thinkpad", "hwmon5", "fan1", 4200),), gpus=(gpu(60, 0x4),))
    backends = [backend(Hardware.NVIDIA), backend(Hardware.CPU), backend(Hardware.NPU, "http://10.0.0.2:11434")]

    report = json.loads(json.dumps(thermal_report(snapshot, backends, CFG, now=12.5)))

    assert report["age_s"] == 2.5
    assert report["sensors"]["hwmon"][0]["label"] == "Package id 0"
    assert report["sensors"]["thermal_zones"][0]["trips"][1] == {"kind": "passive", "celsius": 90}
    assert report["sensors"]["gpus"][0]["throttle"] == ["sw power cap"]
    assert report["fans"][0]["rpm"] == 4200
    assert {t["source"] for t in report["throttling"]} == {"thermal_zone0 (acpitz)",
                                                          "gpu0 (NVIDIA GeForce RTX 4070)"}
    assert report["power"]["on_battery"] is False
    assert {bid: (b["level"], b["penalty"], b["excluded"]) for bid, b in report["backends"].items()} == {
        "nvidia-1": ("cool", 0.0, False), "cpu-1": ("hot", 0.6, False), "npu-1": ("cool", 0.0, False)}
