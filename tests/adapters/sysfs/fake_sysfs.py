"""Fake sysfs trees and a fake nvidia-smi for the reader tests."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path


class FakeSysfs:
    """Writes the attribute files the readers look for; values are given as sysfs spells them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, relative: str, value: object) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")

    def zone(self, n: int, kind: str, millic: object, trips: tuple[tuple[str, object], ...] = ()) -> None:
        base = f"class/thermal/thermal_zone{n}"
        self.write(f"{base}/type", kind)
        self.write(f"{base}/temp", millic)
        for i, (trip_kind, trip_milli) in enumerate(trips):
            self.write(f"{base}/trip_point_{i}_type", trip_kind)
            self.write(f"{base}/trip_point_{i}_temp", trip_milli)

    def hwmon(self, n: int, name: str, temps: dict[int, tuple[object, str | None, object | None]],
              fans: dict[int, object] | None = None) -> None:
        base = f"class/hwmon/hwmon{n}"
        self.write(f"{base}/name", name)
        for i, (millic, label, crit) in temps.items():
            self.write(f"{base}/temp{i}_input", millic)
            if label is not None:
                self.write(f"{base}/temp{i}_label", label)
            if crit is not None:
                self.write(f"{base}/temp{i}_crit", crit)
        for i, rpm in (fans or {}).items():
            self.write(f"{base}/fan{i}_input", rpm)

    def supply(self, name: str, **attributes: object) -> None:
        for key, value in attributes.items():
            self.write(f"class/power_supply/{name}/{key}", value)

    def remove(self, relative: str) -> None:
        path = self.root / relative
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def make_script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path
