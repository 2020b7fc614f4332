"""Shared fixtures: simulated Ollama backends and the real proxy on free loopback ports."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import ollama
import pytest

from ollama_proxy import app
from ollama_proxy.config.load import validate
from ollama_proxy.config.schema import Config, ServerConfig
from ollama_proxy.sim import SimConfig, SimServer

DEFAULT_MODELS = ["llama3.2", "qwen3:4b", "nomic-embed-text"]

# The HTTP engine of every proxy this process starts: CI runs the HTTP suites once per engine
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


# Pytest loads this file before any test module, so every `from ollama_proxy.app import start` in them
# gets the proxy on the chosen engine.
app.start = _start_with_engine


def pytest_configure(config: pytest.Config) -> None:
    # Proxies under test join a session bus by default (desktop.dbus: auto). On a developer's desktop
    # that would be the real one, where they would queue behind a running proxy for its name: the D-Bus
    # and GNOME Shell tests start buses of their own and name them to the proxy explicitly.
    os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)


@pytest.fixture
async def sim_factory() -> AsyncIterator[Callable[..., Any]]:
    """Start simulators on demand: `await sim_factory(profile="npu", models=[...], time_scale=0)`."""
    async with contextlib.AsyncExitStack() as stack:
        async def make(**kwargs: Any) -> SimServer:
            kwargs.setdefault("models", DEFAULT_MODELS)
            kwargs.setdefault("time_scale", 0.0)
            return await stack.enter_async_context(SimServer(SimConfig(**kwargs), host="127.0.0.1", port=0))

        yield make


@pytest.fixture
async def sim(sim_factory: Callable[..., Any]) -> SimServer:
    return await sim_factory()


@pytest.fixture
async def proxy_factory() -> AsyncIterator[Callable[..., Any]]:
    """Start the real proxy with a config dict; returns its base URL."""
    async with contextlib.AsyncExitStack() as stack:
        async def make(config: dict[str, Any]) -> str:
            runner = await app.start(validate(config), host="127.0.0.1", port=0)
            stack.push_async_callback(runner.cleanup)
            return f"http://127.0.0.1:{app.bound_port(runner)}"

        yield make


@pytest.fixture
async def proxy(proxy_factory: Callable[..., Any], sim: SimServer) -> str:
    """The proxy in front of one simulator (the foundation's single-backend setup)."""
    return await proxy_factory({"backends": [{"id": "sim", "endpoint": sim.url}]})


@pytest.fixture
async def ollama_client() -> AsyncIterator[Callable[[str], ollama.AsyncClient]]:
    """`ollama.AsyncClient`s for a base URL, closed after the test (an open one leaks its sockets)."""
    clients: list[ollama.AsyncClient] = []

    def make(host: str) -> ollama.AsyncClient:
        clients.append(ollama.AsyncClient(host=host))
        return clients[-1]

    yield make
    for client in clients:
        await client._client.aclose()
