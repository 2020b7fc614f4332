from __future__ import annotations

import functools
import gc
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fleet import start_fleet

from ollama_proxy import app
from ollama_proxy.config.schema import Config, ServerConfig

# The HTTP engine of every proxy this process starts: CI runs the suite once per engine
# (OLLAMA_PROXY_TEST_ENGINE=aiohttp|fast; unset: the configuration's default). A proxy started as a
# subprocess (the lifecycle and status-command tests) runs the default.
ENGINE = os.environ.get("OLLAMA_PROXY_TEST_ENGINE") or ServerConfig().engine
# Its upstream client likewise (OLLAMA_PROXY_TEST_UPSTREAM=raw|aiohttp), unless the test chose one itself.
UPSTREAM = os.environ.get("OLLAMA_PROXY_TEST_UPSTREAM")
_start = app.start


def _on_engine(config: Config) -> Config:
    server: dict[str, Any] = {"engine": ENGINE}
    if UPSTREAM and "upstream_client" not in config.server.model_fields_set:
        server["upstream_client"] = UPSTREAM
    return config.model_copy(update={"server": config.server.model_copy(update=server)})


@functools.wraps(_start)
async def _start_with_engine(config: Config, *, load: Callable[[], Config] | None = None, **kwargs: Any) -> Any:
    # A reload reads the file again: on the same engine, or it would see a server setting change.
    return await _start(_on_engine(config), load=(lambda: _on_engine(load())) if load else None, **kwargs)


# The test modules import `start` after this file: they start the proxy on the chosen engine.
app.start = _start_with_engine


@pytest.fixture(autouse=True, scope="session")
def _engine_for_proxy_factory(pytestconfig: pytest.Config) -> None:
    """The root conftest imported `start` before this file: its `proxy_factory` is pointed here too."""
    for plugin in pytestconfig.pluginmanager.get_plugins():
        if getattr(plugin, "start", None) is _start:
            plugin.start = _start_with_engine


@pytest.fixture(autouse=True)
def _collect_garbage_per_test() -> Iterator[None]:
    """Leaked sockets warn when collected: collect after each test so the leak is blamed on it."""
    yield
    gc.collect()


@pytest.fixture
def fleet_factory(sim_factory: Callable[..., Any], proxy_factory: Callable[..., Any]) -> Callable[..., Any]:
    """`await fleet_factory(extra_models={"cpu": [...]}, router={...}, system={...}, **sim_kwargs)`."""
    return functools.partial(start_fleet, sim_factory, proxy_factory)
