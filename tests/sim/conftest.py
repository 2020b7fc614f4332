"""Fixtures for the simulator's own tests: instant simulators on free loopback ports and raw HTTP helpers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import ollama
import pytest

from ollama_proxy.sim import SimConfig, SimServer

MakeSim = Callable[..., Awaitable[SimServer]]
OllamaFor = Callable[[SimServer], ollama.AsyncClient]


@pytest.fixture
async def make_sim() -> AsyncIterator[MakeSim]:
    """`await make_sim(models=[...], num_parallel=2)`: a running simulator, instant unless time_scale says."""
    async with contextlib.AsyncExitStack() as stack:
        async def make(**kwargs: Any) -> SimServer:
            kwargs.setdefault("time_scale", 0.0)
            return await stack.enter_async_context(SimServer(SimConfig(**kwargs)))

        yield make


@pytest.fixture
async def sim(make_sim: MakeSim) -> SimServer:
    return await make_sim()


@pytest.fixture
async def ollama_for() -> AsyncIterator[Callable[[SimServer], ollama.AsyncClient]]:
    """`ollama_for(sim)`: the official client pointed at a simulator, closed after the test."""
    clients: list[ollama.AsyncClient] = []

    def make(sim: SimServer) -> ollama.AsyncClient:
        clients.append(ollama.AsyncClient(host=sim.url))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(http: aiohttp.ClientSession, sim: SimServer, method: str, path: str,
               body: Any = None, **kwargs: Any) -> tuple[int, Any]:
    """Status and decoded body (JSON when the reply is JSON, else text)."""
    async with http.request(method, sim.url + path, json=body, **kwargs) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def stats(http: aiohttp.ClientSession, sim: SimServer) -> dict[str, Any]:
    return (await call(http, sim, "GET", "/sim/stats"))[1]
