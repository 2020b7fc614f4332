"""Fixtures for the sysfs reader tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_sysfs import FakeSysfs


@pytest.fixture
def sysfs(tmp_path: Path) -> FakeSysfs:
    return FakeSysfs(tmp_path / "sys")
