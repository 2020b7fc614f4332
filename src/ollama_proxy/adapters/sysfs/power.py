"""Read mains and battery state from `class/power_supply` in a sysfs tree.

Blocking file reads: call from a worker thread. Batteries with `scope` Device (a wireless
mouse, a headset) are not the machine's and are ignored. This module merges supplies into
one `PowerState` but must not decide what that state means for routing.
"""

from __future__ import annotations

from pathlib import Path

from ollama_proxy.adapters.sysfs._files import read_number, read_text
from ollama_proxy.core.system.telemetry import BatteryStatus, PowerState

# USB covers USB-C power delivery, which is how many laptops are charged today.
_MAINS_TYPES = frozenset({"Mains", "USB"})
_STATUSES = {status.value: status for status in BatteryStatus}
# When batteries disagree, report the one that matters most for power policy.
_STATUS_PRECEDENCE = (BatteryStatus.DISCHARGING, BatteryStatus.CHARGING, BatteryStatus.NOT_CHARGING,
                      BatteryStatus.FULL, BatteryStatus.UNKNOWN)


def read_power(root: Path) -> PowerState:
    """Merge all supplies: on AC if any mains/USB supply is online; battery charge averaged."""
    online: list[bool] = []
    capacities: list[float] = []
    statuses: list[BatteryStatus] = []
    parent = root / "class" / "power_supply"
    try:
        supplies = sorted(p for p in parent.iterdir() if p.is_dir())
    except OSError:
        supplies = []
    for supply in supplies:
        kind = read_text(supply / "type")
        if kind in _MAINS_TYPES:
            value = read_number(supply / "online")
            if value is not None:
                online.append(value > 0)
        elif kind == "Battery" and _is_system_battery(supply):
            capacity = read_number(supply / "capacity")
            if capacity is not None and 0 <= capacity <= 100:
                capacities.append(capacity)
            statuses.append(_STATUSES.get(read_text(supply / "status") or "", BatteryStatus.UNKNOWN))
    return PowerState(
        on_ac=any(online) if online else None,
        battery_percent=sum(capacities) / len(capacities) if capacities else None,
        battery_status=next((s for s in _STATUS_PRECEDENCE if s in statuses), None),
    )


def _is_system_battery(supply: Path) -> bool:
    if read_text(supply / "scope") == "Device":
        return False
    present = read_number(supply / "present")
    return present is None or present > 0
