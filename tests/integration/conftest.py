from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _collect_garbage_per_test() -> Iterator[None]:
    """Leaked sockets warn when collected: collect after each test so the leak is blamed on it."""
    yield
    gc.collect()
