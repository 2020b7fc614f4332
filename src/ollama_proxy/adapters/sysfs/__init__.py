"""System state readers: sysfs thermal zones, hwmon, power supplies, nvidia-smi, and the monitor."""

from __future__ import annotations

from ollama_proxy.adapters.sysfs.monitor import ModeChange, ModeListener, SystemMonitor, take_snapshot
from ollama_proxy.adapters.sysfs.nvidia import parse_nvidia_csv, read_nvidia
from ollama_proxy.adapters.sysfs.power import read_power
from ollama_proxy.adapters.sysfs.thermal import read_hwmon, read_thermal_zones

__all__ = [
    "ModeChange",
    "ModeListener",
    "SystemMonitor",
    "parse_nvidia_csv",
    "read_hwmon",
    "read_nvidia",
    "read_power",
    "read_thermal_zones",
    "take_snapshot",
]
