"""System readings as plain values: thermal zones, hwmon sensors, fans, power supplies, GPUs.

These are what the sysfs and nvidia-smi adapters produce and what the thermal and efficiency
policies consume. This module must not know where a reading came from (paths, commands) or
how it is judged; it only holds values. A sensor the machine does not have is simply absent:
an empty tuple or a `None` field, never a placeholder number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

# NVML clock-throttle-reason bits (nvmlClocksThrottleReason*, the same bitmask nvidia-smi prints
# for clocks_throttle_reasons.active). Only the reasons that mean "slowed down by heat or power"
# matter to us; idle and application clocks are the GPU resting, not suffering.
GPU_THROTTLE_BITS: dict[int, str] = {
    0x0000000000000004: "sw power cap",
    0x0000000000000008: "hw slowdown",
    0x0000000000000020: "sw thermal slowdown",
    0x0000000000000040: "hw thermal slowdown",
    0x0000000000000080: "hw power brake slowdown",
}
# The subset of GPU_THROTTLE_BITS that means the GPU is at its thermal limit.
GPU_THERMAL_BITS = 0x0000000000000020 | 0x0000000000000040


class TripKind(StrEnum):
    """Kinds of thermal-zone trip points, as the kernel names them in `trip_point_N_type`."""

    ACTIVE = "active"  # turn a fan on: cooling, not throttling
    PASSIVE = "passive"  # the kernel starts throttling the CPU
    HOT = "hot"  # the platform is told it is overheating
    CRITICAL = "critical"  # the kernel shuts the machine down


class BatteryStatus(StrEnum):
    """`status` of a power_supply battery, as the kernel spells it."""

    CHARGING = "Charging"
    DISCHARGING = "Discharging"
    NOT_CHARGING = "Not charging"
    FULL = "Full"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True)
class TripPoint:
    kind: TripKind
    celsius: float


@dataclass(frozen=True, slots=True)
class ThermalZone:
    """One `class/thermal/thermal_zoneN`: its type (x86_pkg_temp, acpitz, ...) and temperature."""

    name: str
    type: str
    celsius: float
    trips: tuple[TripPoint, ...] = ()


@dataclass(frozen=True, slots=True)
class HwmonSensor:
    """One `tempN_input` of a hwmon chip; `label` falls back to `tempN` when the chip gives none."""

    chip: str
    device: str
    label: str
    celsius: float
    crit_celsius: float | None = None


@dataclass(frozen=True, slots=True)
class FanReading:
    chip: str
    device: str
    label: str
    rpm: float


@dataclass(frozen=True, slots=True)
class PowerState:
    """Mains and battery, merged over all supplies.

    `on_ac` is None when no mains or USB supply is reported at all; `battery_percent` and
    `battery_status` are None without a system battery (a desktop).
    """

    on_ac: bool | None = None
    battery_percent: float | None = None
    battery_status: BatteryStatus | None = None

    @property
    def on_battery(self) -> bool:
        """Whether the machine runs from its battery now.

        A mains reading wins; without one, a discharging battery is the only evidence.
        """
        if self.on_ac is not None:
            return not self.on_ac and self.battery_status is not None
        return self.battery_status is BatteryStatus.DISCHARGING


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One NVIDIA GPU row from nvidia-smi; a field the driver reports as [N/A] is None."""

    index: int
    name: str
    celsius: float | None = None
    power_watts: float | None = None
    fan_percent: float | None = None
    utilisation_percent: float | None = None
    throttle_reasons: int | None = None

    @property
    def throttle_names(self) -> tuple[str, ...]:
        """The heat or power slowdowns active now, by name (empty when none or unknown)."""
        mask = self.throttle_reasons or 0
        return tuple(name for bit, name in GPU_THROTTLE_BITS.items() if mask & bit)

    @property
    def thermal_limited(self) -> bool:
        return bool((self.throttle_reasons or 0) & GPU_THERMAL_BITS)


@dataclass(frozen=True, slots=True)
class SystemSnapshot:
    """Everything sampled at one moment; `taken_at` is on the caller's monotonic clock."""

    taken_at: float
    zones: tuple[ThermalZone, ...] = ()
    sensors: tuple[HwmonSensor, ...] = ()
    fans: tuple[FanReading, ...] = ()
    power: PowerState = field(default_factory=PowerState)
    gpus: tuple[GpuReading, ...] = ()
