"""Thermal zone, hwmon and power-supply readers against fake sysfs trees."""

from __future__ import annotations

from pathlib import Path

from fake_sysfs import FakeSysfs

from ollama_proxy.adapters.sysfs import read_hwmon, read_power, read_thermal_zones
from ollama_proxy.core.system.telemetry import (
    BatteryStatus,
    FanReading,
    HwmonSensor,
    PowerState,
    ThermalZone,
    TripKind,
    TripPoint,
)


def test_thermal_zones_with_trip_points(sysfs: FakeSysfs) -> None:
    sysfs.zone(0, "acpitz", 45500, (("active", 60000), ("passive", 95000), ("critical", 105000)))
    sysfs.zone(10, "iwlwifi_1", 38000)
    sysfs.zone(2, "x86_pkg_temp", 61000, (("passive", 0), ("bogus", 90000), ("hot", "garbage")))

    zones = read_thermal_zones(sysfs.root)

    assert zones == (
        ThermalZone("thermal_zone0", "acpitz", 45.5, (TripPoint(TripKind.ACTIVE, 60), TripPoint(
            TripKind.PASSIVE, 95), TripPoint(TripKind.CRITICAL, 105))),
        # Disabled (0C), unknown-kind and unreadable trips are dropped, the zone is kept.
        ThermalZone("thermal_zone2", "x86_pkg_temp", 61.0),
        ThermalZone("thermal_zone10", "iwlwifi_1", 38.0),
    )


def test_thermal_zones_tolerate_missing_and_broken_files(sysfs: FakeSysfs) -> None:
    sysfs.zone(0, "acpitz", "not a number")
    sysfs.zone(1, "acpitz", 300000)  # 300C: an error code, not a temperature
    sysfs.zone(2, "pch", 50000)
    sysfs.remove("class/thermal/thermal_zone2/type")
    sysfs.write("class/thermal/thermal_zone3/type", "no-temp-file")
    (sysfs.root / "class/thermal/thermal_zone4/temp").mkdir(parents=True)  # read raises IsADirectoryError
    sysfs.write("class/thermal/cooling_device0/type", "Processor")

    assert read_thermal_zones(sysfs.root) == (ThermalZone("thermal_zone2", "thermal_zone2", 50.0),)


def test_hwmon_temperatures_and_fans(sysfs: FakeSysfs) -> None:
    sysfs.hwmon(1, "coretemp", {1: (88000, "Package id 0", 100000), 2: (85000, "Core 0", 100000)})
    sysfs.hwmon(3, "thinkpad", {1: (50000, None, None)}, fans={1: 4100, 2: "garbage"})
    sysfs.hwmon(2, "nvme", {1: (-128000, "Composite", None), 2: ("", "Sensor 1", None)})

    sensors, fans = read_hwmon(sysfs.root)

    assert sensors == (
        HwmonSensor("coretemp", "hwmon1", "Package id 0", 88.0, 100.0),
        HwmonSensor("coretemp", "hwmon1", "Core 0", 85.0, 100.0),
        HwmonSensor("thinkpad", "hwmon3", "temp1", 50.0),
    )
    assert fans == (FanReading("thinkpad", "hwmon3", "fan1", 4100.0),)


def test_hwmon_without_name_uses_the_directory(sysfs: FakeSysfs) -> None:
    sysfs.hwmon(0, "x", {1: (40000, None, None)})
    sysfs.remove("class/hwmon/hwmon0/name")
    sensors, _ = read_hwmon(sysfs.root)
    assert [s.chip for s in sensors] == ["hwmon0"]


def test_laptop_on_ac(sysfs: FakeSysfs) -> None:
    sysfs.supply("AC", type="Mains", online=1)
    sysfs.supply("BAT0", type="Battery", present=1, capacity=80, status="Charging")
    assert read_power(sysfs.root) == PowerState(True, 80.0, BatteryStatus.CHARGING)


def test_laptop_on_battery_ignores_a_mouse_battery(sysfs: FakeSysfs) -> None:
    sysfs.supply("ADP1", type="Mains", online=0)
    sysfs.supply("ucsi-source-psy-USBC000:001", type="USB", online=0)
    sysfs.supply("BAT0", type="Battery", capacity=40, status="Discharging")
    sysfs.supply("BAT1", type="Battery", capacity=60, status="Unknown")
    sysfs.supply("hidpp_battery_0", type="Battery", scope="Device", capacity=5, status="Discharging")
    sysfs.supply("BAT2", type="Battery", present=0, capacity=0, status="Unknown")

    power = read_power(sysfs.root)

    assert power == PowerState(False, 50.0, BatteryStatus.DISCHARGING)
    assert power.on_battery


def test_usb_c_charger_counts_as_ac(sysfs: FakeSysfs) -> None:
    sysfs.supply("ADP1", type="Mains", online=0)
    sysfs.supply("ucsi-source-psy-USBC000:001", type="USB", online=1)
    sysfs.supply("BAT0", type="Battery", capacity=40, status="Charging")
    assert read_power(sysfs.root).on_ac is True


def test_power_tolerates_garbage(sysfs: FakeSysfs) -> None:
    sysfs.supply("AC", type="Mains", online="?")
    sysfs.supply("BAT0", type="Battery", capacity=250, status="Exploding")
    sysfs.supply("weird", capacity=10)  # no type file

    power = read_power(sysfs.root)

    assert power == PowerState(None, None, BatteryStatus.UNKNOWN)
    assert not power.on_battery


def test_empty_tree_reads_as_nothing(tmp_path: Path) -> None:
    assert read_thermal_zones(tmp_path) == ()
    assert read_hwmon(tmp_path) == ((), ())
    assert read_power(tmp_path) == PowerState()
