"""Thermal judgement: which hardware is throttling, how hot each backend's hardware is, GET /thermal.

Pure: takes a `SystemSnapshot` and thresholds, returns values. It must not know how readings
are taken (sysfs paths, nvidia-smi) nor how the router weighs the penalty it hands out; it
only says "this backend's hardware is hot, here is why, and here is how much to mind".

Per-backend state assumes the backend runs on this machine: a backend whose endpoint is not a
loopback address is reported cool with no sensor, because our sensors say nothing about another
host. The levels are the router's own `ThermalLevel`, so its `BackendView` takes `.state` as is.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from ollama_proxy.core.routing.state import ThermalLevel, ThermalState
from ollama_proxy.core.system.telemetry import (
    GpuReading,
    HwmonSensor,
    SystemSnapshot,
    ThermalZone,
    TripKind,
    TripPoint,
)


class ThermalThresholds(Protocol):
    """The part of `SystemConfig` this module reads (SystemConfig satisfies it as is)."""

    @property
    def hot_celsius(self) -> float: ...
    @property
    def cool_celsius(self) -> float: ...


class BackendHardware(Protocol):
    """The part of `BackendConfig` this module reads (BackendConfig satisfies it as is)."""

    @property
    def id(self) -> str: ...
    @property
    def hardware(self) -> str: ...
    @property
    def endpoint(self) -> str: ...


# Score penalty per level, 0.0 (no effect) .. 1.0 (exclude). A backend we cannot measure (remote,
# or no sensor) is reported cool: it must not lose to one we can measure merely because we can.
PENALTY: dict[ThermalLevel, float] = {
    ThermalLevel.COOL: 0.0,
    ThermalLevel.WARM: 0.2,
    ThermalLevel.HOT: 0.6,
    ThermalLevel.CRITICAL: 1.0,
}

# Trip kinds at which the kernel or platform acts against heat (active trips only start fans).
_THROTTLING_TRIPS = (TripKind.PASSIVE, TripKind.HOT, TripKind.CRITICAL)
_LIMIT_TRIPS = (TripKind.HOT, TripKind.CRITICAL)

# CPU package sensors, best first. Tdie ranks above Tctl because AMD adds a fan-control offset
# (up to 27C on some Threadrippers) to Tctl; the zones are coarser fallbacks for machines
# without a hwmon CPU driver.
_PACKAGE_HWMON: tuple[tuple[str, str], ...] = (
    ("coretemp", "Package id"),
    ("k10temp", "Tdie"),
    ("zenpower", "Tdie"),
    ("k10temp", "Tctl"),
    ("zenpower", "Tctl"),
)
_PACKAGE_ZONES = ("x86_pkg_temp", "acpitz")

_CPU_HARDWARE = frozenset({"cpu", "igpu", "npu"})


@dataclass(frozen=True, slots=True)
class Probe:
    """The one temperature chosen to stand for a piece of hardware.

    `throttle` is what the hardware itself says it is doing about heat; `at_limit` is its own
    report of having reached its critical limit (a GPU's hardware thermal slowdown), which
    counts as critical even when we know no crit temperature.
    """

    label: str
    celsius: float
    crit_celsius: float | None = None
    throttle: str | None = None
    at_limit: bool = False


@dataclass(frozen=True, slots=True)
class Throttling:
    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class BackendThermal:
    """A backend's thermal state for the router and for GET /thermal and /backends."""

    backend_id: str
    hardware: str
    level: ThermalLevel
    reason: str
    celsius: float | None = None
    sensor: str | None = None

    @property
    def penalty(self) -> float:
        return PENALTY[self.level]

    @property
    def state(self) -> ThermalState:
        """The router's view of it, for `BackendView.thermal`."""
        return ThermalState(self.level, self.celsius, self.reason)

    @property
    def excluded(self) -> bool:
        return self.level is ThermalLevel.CRITICAL


def reached_trip(zone: ThermalZone) -> TripPoint | None:
    """The hottest throttling trip point (passive, hot, critical) the zone is at or over."""
    reached = [t for t in zone.trips if t.kind in _THROTTLING_TRIPS and zone.celsius >= t.celsius]
    return max(reached, key=lambda t: t.celsius, default=None)


def detect_throttling(snapshot: SystemSnapshot) -> tuple[Throttling, ...]:
    """Every zone at a throttling trip point and every GPU slowed by heat or power."""
    found = [
        Throttling(f"{zone.name} ({zone.type})",
                   f"{zone.celsius:.0f}C >= {trip.kind} trip {trip.celsius:.0f}C")
        for zone in snapshot.zones
        if (trip := reached_trip(zone)) is not None
    ]
    found += [
        Throttling(_gpu_label(gpu), ", ".join(gpu.throttle_names))
        for gpu in snapshot.gpus
        if gpu.throttle_names
    ]
    return tuple(found)


def cpu_package_probe(snapshot: SystemSnapshot) -> Probe | None:
    """The CPU package temperature, from the best kind of sensor this machine has (hottest of it)."""
    for chip, prefix in _PACKAGE_HWMON:
        matches = [s for s in snapshot.sensors if s.chip == chip and s.label.startswith(prefix)]
        if matches:
            return _hwmon_probe(max(matches, key=lambda s: s.celsius))
    for zone_type in _PACKAGE_ZONES:
        zones = [z for z in snapshot.zones if z.type == zone_type]
        if zones:
            return _zone_probe(max(zones, key=lambda z: z.celsius))
    return None


def gpu_probe(snapshot: SystemSnapshot) -> Probe | None:
    """The hottest NVIDIA GPU (backends do not say which card they use, so assume the worst)."""
    gpus = [g for g in snapshot.gpus if g.celsius is not None]
    if not gpus:
        return None
    gpu = max(gpus, key=lambda g: g.celsius or 0.0)
    thermal = tuple(n for n in gpu.throttle_names if "thermal" in n)
    return Probe(
        label=f"{_gpu_label(gpu)} temperature",
        celsius=gpu.celsius or 0.0,
        throttle=", ".join(thermal) or None,
        at_limit="hw thermal slowdown" in thermal,
    )


def classify(probe: Probe | None, thresholds: ThermalThresholds) -> tuple[ThermalLevel, str]:
    """Level and human reason for one probe: critical at its limit, hot from hot_celsius (or
    when the hardware throttles), warm from cool_celsius."""
    if probe is None:
        return ThermalLevel.COOL, "no temperature sensor for this hardware"
    at = f"{probe.label} {probe.celsius:.0f}C"
    hot, cool = thresholds.hot_celsius, thresholds.cool_celsius
    if probe.crit_celsius is not None and probe.celsius >= probe.crit_celsius:
        return ThermalLevel.CRITICAL, f"{at} >= critical {probe.crit_celsius:.0f}C"
    if probe.at_limit:
        return ThermalLevel.CRITICAL, f"{at}: {probe.throttle}"
    if probe.celsius >= hot:
        return ThermalLevel.HOT, f"{at} >= hot {hot:.0f}C"
    if probe.throttle:
        return ThermalLevel.HOT, f"{at}: throttling ({probe.throttle})"
    if probe.celsius >= cool:
        return ThermalLevel.WARM, f"{at} >= warm {cool:.0f}C"
    return ThermalLevel.COOL, f"{at} < warm {cool:.0f}C"


def backend_thermal(
    backend: BackendHardware, snapshot: SystemSnapshot, thresholds: ThermalThresholds
) -> BackendThermal:
    """Map the backend's hardware to the sensor that represents it and classify that sensor.

    nvidia reads the GPU; cpu, igpu and npu share the CPU package (an iGPU and an NPU sit on
    the CPU die and heat it); other hardware and remote backends have no local sensor.
    """
    hardware = str(backend.hardware)
    if not _is_local(backend.endpoint):
        return BackendThermal(backend.id, hardware, ThermalLevel.COOL,
                              "remote backend: this machine's sensors do not apply")
    if hardware == "nvidia":
        probe = gpu_probe(snapshot)
    elif hardware in _CPU_HARDWARE:
        probe = cpu_package_probe(snapshot)
    else:
        return BackendThermal(backend.id, hardware, ThermalLevel.COOL,
                              f"no sensor is mapped to {hardware!r} hardware")
    level, reason = classify(probe, thresholds)
    return BackendThermal(
        backend.id, hardware, level, reason,
        celsius=probe.celsius if probe else None,
        sensor=probe.label if probe else None,
    )


def backends_thermal(
    snapshot: SystemSnapshot, backends: tuple[BackendHardware, ...] | list[BackendHardware],
    thresholds: ThermalThresholds,
) -> dict[str, BackendThermal]:
    return {b.id: backend_thermal(b, snapshot, thresholds) for b in backends}


def thermal_report(
    snapshot: SystemSnapshot, backends: tuple[BackendHardware, ...] | list[BackendHardware],
    thresholds: ThermalThresholds, *, now: float | None = None,
) -> dict[str, Any]:
    """The JSON-able body of GET /thermal.

    `now` (same monotonic clock as `snapshot.taken_at`) adds the snapshot's age, so a client
    can tell a stalled monitor from a quiet machine.
    """
    report: dict[str, Any] = {
        "sensors": {
            "thermal_zones": [asdict(z) for z in snapshot.zones],
            "hwmon": [asdict(s) for s in snapshot.sensors],
            "gpus": [{**asdict(g), "throttle": list(g.throttle_names)} for g in snapshot.gpus],
        },
        "fans": [asdict(f) for f in snapshot.fans],
        "power": {**asdict(snapshot.power), "on_battery": snapshot.power.on_battery},
        "throttling": [asdict(t) for t in detect_throttling(snapshot)],
        "thresholds": {"hot_celsius": thresholds.hot_celsius, "cool_celsius": thresholds.cool_celsius},
        "backends": {
            bid: {**asdict(state), "penalty": state.penalty, "excluded": state.excluded}
            for bid, state in backends_thermal(snapshot, backends, thresholds).items()
        },
    }
    if now is not None:
        report["age_s"] = round(max(0.0, now - snapshot.taken_at), 3)
    return report


def _hwmon_probe(sensor: HwmonSensor) -> Probe:
    return Probe(f"cpu package ({sensor.chip} {sensor.label})", sensor.celsius, sensor.crit_celsius)


def _zone_probe(zone: ThermalZone) -> Probe:
    limits = [t.celsius for t in zone.trips if t.kind in _LIMIT_TRIPS]
    trip = reached_trip(zone)
    return Probe(
        label=f"cpu package ({zone.type})",
        celsius=zone.celsius,
        crit_celsius=min(limits, default=None),
        throttle=f"{trip.kind} trip {trip.celsius:.0f}C" if trip else None,
    )


def _gpu_label(gpu: GpuReading) -> str:
    return f"gpu{gpu.index} ({gpu.name})" if gpu.name else f"gpu{gpu.index}"


def _is_local(endpoint: str) -> bool:
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
