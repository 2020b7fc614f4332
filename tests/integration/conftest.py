from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fleet import start_fleet


@pytest.fixture(autouse=True)
def _collect_garbage_per_test() -> Iterator[None]:
    """Leaked sockets warn when collected: collect after each test so the leak is blamed on it."""
    yield
    gc.collect()


@pytest.fixture
def fleet_factory(sim_factory: Callable[..., Any], proxy_factory: Callable[..., Any]) -> Callable[..., Any]:
    """`await fleet_factory(extra_models={"cpu": [...]}, router={...}, system={...}, **sim_kwargs)`."""
    return functools.partial(start_fleet, sim_factory, proxy_factory)
