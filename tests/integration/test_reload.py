"""Configuration reload through the real proxy in front of simulators: POST /admin/reload and SIGHUP.

What must hold: a bad file changes nothing; a good one applies to new requests while a request under
way finishes on the old settings; backends that stay keep what was learned about them.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from ollama_proxy.app import bound_port, drain, start
from ollama_proxy.config.load import load_config
from ollama_proxy.sim import SimServer

sys.path.insert(0, str(Path(__file__).parent))
from test_lifecycle import free_port, spawn_proxy  # noqa: F401  (spawn_proxy: the fixture, the real CLI)


class Reloadable:
    """A proxy whose configuration file the test rewrites between reloads."""

    def __init__(self, path: Path, url: str) -> None:
        self.path, self.url = path, url

    def write(self, config: dict[str, Any]) -> None:
        self.path.write_text(yaml.safe_dump(config))

    async def reload(self) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as session, session.post(self.url + "/admin/reload") as r:
            return r.status, await r.json()

    async def get(self, path: str) -> Any:
        async with aiohttp.ClientSession() as session, session.get(self.url + path) as r:
            return await r.json()

    async def generate(self, path: str = "/api/generate", **body: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, session.post(
                self.url + path, json={"model": "llama3.2", "prompt": "hi", "stream": False, **body}) as r:
            return r.status, await r.json()


@pytest.fixture
async def reloadable(tmp_path: Path) -> AsyncIterator[Callable[[dict[str, Any]], Any]]:
    runners = []

    async def make(config: dict[str, Any]) -> Reloadable:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        runner = await start(load_config(path), host="127.0.0.1", port=0, load=lambda: load_config(path))
        runners.append(runner)
        return Reloadable(path, f"http://127.0.0.1:{bound_port(runner)}")

    yield make
    for runner in runners:
        await drain(runner, 0.5)


def backend(backend_id: str, sim: SimServer, **extra: Any) -> dict[str, Any]:
    return {"id": backend_id, "endpoint": sim.url, **extra}


async def test_reload_adds_a_backend_and_keeps_what_was_learned(reloadable: Any, sim_factory: Any) -> None:
    first, second = await sim_factory(time_scale=0), await sim_factory(time_scale=0)
    proxy = await reloadable({"backends": [backend("a", first)]})
    for _ in range(2):  # the first loads the model, which teaches load time rather than latency
        assert (await proxy.generate())[0] == 200
    learned = {b["id"]: b["learned_latency"] for b in (await proxy.get("/backends"))["backends"]}["a"]
    assert learned, "nothing learned before the reload"

    proxy.write({"backends": [backend("a", first), backend("b", second)], "context": {"sizes": [4096, 8192]}})
    status, answer = await proxy.reload()
    assert status == 200, answer
    assert answer["backends"] == {"kept": ["a"], "new_or_changed": ["b"], "removed": []}
    after = {b["id"]: b for b in (await proxy.get("/backends"))["backends"]}
    assert set(after) == {"a", "b"} and after["b"]["reachable"]
    assert after["a"]["learned_latency"] == learned
    # The new sizes apply: 2048 is no longer one of them, 8192 is.
    assert (await proxy.generate("/proxy-context/2048/api/generate"))[0] == 400
    assert (await proxy.generate("/proxy-context/8192/api/generate"))[0] == 200
    assert (await proxy.get("/health"))["context"]["sizes"] == [4096, 8192]


async def test_a_bad_file_changes_nothing(reloadable: Any, sim: SimServer) -> None:
    proxy = await reloadable({"backends": [backend("a", sim)]})
    proxy.write({"backends": [backend("a", sim)], "router": {"no_such_setting": 1}})
    status, answer = await proxy.reload()
    assert status == 400 and "no_such_setting" in answer["error"] and "running one stays" in answer["error"]
    proxy.path.write_text("backends: [unclosed")
    status, answer = await proxy.reload()
    assert status == 400
    assert [b["id"] for b in (await proxy.get("/backends"))["backends"]] == ["a"]
    assert (await proxy.generate())[0] == 200


async def test_a_request_under_way_finishes_on_the_backend_it_started_on(reloadable: Any,
                                                                         sim_factory: Any) -> None:
    slow, other = await sim_factory(time_scale=1.0), await sim_factory(time_scale=0)
    proxy = await reloadable({"backends": [backend("slow", slow)]})
    under_way = asyncio.ensure_future(proxy.generate(prompt="tell me a long story"))
    await asyncio.sleep(0.3)
    proxy.write({"backends": [backend("other", other)]})
    status, answer = await proxy.reload()
    assert status == 200 and answer["backends"]["removed"] == ["slow"]
    status, reply = await under_way
    assert status == 200 and reply["done"] is True
    async with aiohttp.ClientSession() as session, session.post(
            proxy.url + "/api/generate", json={"model": "llama3.2", "prompt": "hi", "stream": False}) as r:
        assert r.status == 200 and r.headers["X-Backend-Used"] == "other"


async def test_listen_settings_need_a_restart_and_keys_guard_the_reload(reloadable: Any, sim: SimServer) -> None:
    proxy = await reloadable({"backends": [backend("a", sim)]})
    proxy.write({"backends": [backend("a", sim)], "server": {"http_port": 12345}})
    status, answer = await proxy.reload()
    assert status == 200 and answer["restart_needed"] == ["server"]
    proxy.write({"backends": [backend("a", sim)], "desktop": {"dbus": "off", "notifications": False}})
    status, answer = await proxy.reload()
    assert status == 200 and answer["restart_needed"] == ["desktop.dbus"]

    keyed = await reloadable({"backends": [backend("a", sim)], "server": {"api_keys": ["k1"]}})
    async with aiohttp.ClientSession() as session:
        async with session.post(keyed.url + "/admin/reload") as r:
            assert r.status == 401
        async with session.post(keyed.url + "/admin/reload", headers={"Authorization": "Bearer k1"}) as r:
            assert r.status == 200


async def test_sighup_reloads_the_running_cli(spawn_proxy: Any, sim_factory: Any, tmp_path: Path) -> None:  # noqa: F811
    first, second = await sim_factory(time_scale=0), await sim_factory(time_scale=0)
    config = tmp_path / "proxy.yaml"
    config.write_text(yaml.safe_dump({"backends": [backend("a", first)]}))
    port = free_port()
    proxy = spawn_proxy("--config", str(config), "--proxy-port", str(port), port=port)
    await proxy.wait_ready()
    config.write_text(yaml.safe_dump({"backends": [backend("a", first), backend("b", second)]}))
    proxy.process.send_signal(signal.SIGHUP)
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            async with session.get(proxy.url + "/backends") as r:
                ids = [b["id"] for b in (await r.json())["backends"]]
            if ids == ["a", "b"]:
                break
            await asyncio.sleep(0.1)
    assert ids == ["a", "b"], proxy.stderr()
    assert "configuration reloaded" in proxy.stderr()
