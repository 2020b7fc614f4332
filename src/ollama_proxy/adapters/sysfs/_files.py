"""Tolerant reads of single sysfs attribute files.

sysfs attributes vanish with hot-plugged devices, refuse reads from suspended hardware (EIO,
ENODATA) and sometimes hold garbage. A reading we cannot get is None, never an exception,
so one bad sensor cannot take the whole snapshot down.
"""

from __future__ import annotations

from pathlib import Path

# Beyond this a "temperature" is a disconnected probe or an error code, not heat
# (some chips report -128C or 255C for an unconnected input).
PLAUSIBLE_CELSIUS = (-50.0, 200.0)


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="strict").strip()
    except (OSError, UnicodeDecodeError):
        return None


def read_number(path: Path) -> float | None:
    text = read_text(path)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def read_millicelsius(path: Path) -> float | None:
    """A temperature in millidegrees (the sysfs convention), as degrees; None when implausible."""
    milli = read_number(path)
    if milli is None:
        return None
    celsius = milli / 1000.0
    low, high = PLAUSIBLE_CELSIUS
    return celsius if low <= celsius <= high else None
