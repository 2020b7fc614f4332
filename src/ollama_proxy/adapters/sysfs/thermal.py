"""Read thermal zones and hwmon chips (temperatures, crit limits, fans) from a sysfs tree.

Blocking file reads: call from a worker thread (SystemMonitor does). The tree's root is a
parameter so tests and odd systems can point elsewhere. This module must not judge the
readings; the core's thermal policy does that.
"""

from __future__ import annotations

import re
from pathlib import Path

from ollama_proxy.adapters.sysfs._files import read_millicelsius, read_number, read_text
from ollama_proxy.core.system.telemetry import FanReading, HwmonSensor, ThermalZone, TripKind, TripPoint

_TRIP_TEMP = re.compile(r"trip_point_(\d+)_temp")
_TEMP_INPUT = re.compile(r"temp(\d+)_input")
_FAN_INPUT = re.compile(r"fan(\d+)_input")
_TRIP_KINDS = frozenset(kind.value for kind in TripKind)


def read_thermal_zones(root: Path) -> tuple[ThermalZone, ...]:
    """Every `class/thermal/thermal_zone*` with a readable temperature, with its trip points."""
    zones = []
    for zone_dir in _sorted_dirs(root / "class" / "thermal", "thermal_zone*"):
        celsius = read_millicelsius(zone_dir / "temp")
        if celsius is None:
            continue
        zone_type = read_text(zone_dir / "type") or zone_dir.name
        zones.append(ThermalZone(zone_dir.name, zone_type, celsius, _trip_points(zone_dir)))
    return tuple(zones)


def read_hwmon(root: Path) -> tuple[tuple[HwmonSensor, ...], tuple[FanReading, ...]]:
    """Temperatures and fans of every `class/hwmon/hwmon*` chip."""
    sensors: list[HwmonSensor] = []
    fans: list[FanReading] = []
    for chip_dir in _sorted_dirs(root / "class" / "hwmon", "hwmon*"):
        chip = read_text(chip_dir / "name") or chip_dir.name
        for n in _indices(chip_dir, "temp*_input", _TEMP_INPUT):
            celsius = read_millicelsius(chip_dir / f"temp{n}_input")
            if celsius is None:
                continue
            label = read_text(chip_dir / f"temp{n}_label") or f"temp{n}"
            crit = read_millicelsius(chip_dir / f"temp{n}_crit")
            sensors.append(HwmonSensor(chip, chip_dir.name, label, celsius, crit))
        for n in _indices(chip_dir, "fan*_input", _FAN_INPUT):
            rpm = read_number(chip_dir / f"fan{n}_input")
            if rpm is None or rpm < 0:
                continue
            label = read_text(chip_dir / f"fan{n}_label") or f"fan{n}"
            fans.append(FanReading(chip, chip_dir.name, label, rpm))
    return tuple(sensors), tuple(fans)


def _trip_points(zone_dir: Path) -> tuple[TripPoint, ...]:
    trips = []
    for n in _indices(zone_dir, "trip_point_*_temp", _TRIP_TEMP):
        kind = read_text(zone_dir / f"trip_point_{n}_type")
        celsius = read_millicelsius(zone_dir / f"trip_point_{n}_temp")
        # Firmware marks unused trips with 0 or a negative temperature; taken at face value a
        # passive trip at 0C would mean "always throttling".
        if kind not in _TRIP_KINDS or celsius is None or celsius <= 0:
            continue
        trips.append(TripPoint(TripKind(kind), celsius))
    return tuple(trips)


def _sorted_dirs(parent: Path, pattern: str) -> list[Path]:
    try:
        return sorted((p for p in parent.glob(pattern) if p.is_dir()), key=_natural_key)
    except OSError:
        return []


def _indices(directory: Path, pattern: str, regex: re.Pattern[str]) -> list[int]:
    try:
        names = [p.name for p in directory.glob(pattern)]
    except OSError:
        return []
    return sorted(int(m.group(1)) for name in names if (m := regex.fullmatch(name)))


def _natural_key(path: Path) -> tuple[str, int]:
    """Sort hwmon10 after hwmon9, not after hwmon1."""
    match = re.fullmatch(r"(.*?)(\d+)", path.name)
    return (match.group(1), int(match.group(2))) if match else (path.name, -1)
