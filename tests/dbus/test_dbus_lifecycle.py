"""When the proxy is on the bus and when not: desktop.dbus off/auto/on, no bus at all, a bus that
restarts under it, a configuration reload."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dbus_fast import Message
from dbus_fast.aio import MessageBus
from dbus_harness import PROXY, SessionBus, SignalRecorder, needs_dbus

from ollama_proxy.app import bound_port, start
from ollama_proxy.config.load import validate

pytestmark = needs_dbus


async def has_owner(address: str) -> bool:
    bus = await MessageBus(bus_address=address).connect()
    try:
        reply = await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                                       interface="org.freedesktop.DBus", member="NameHasOwner", signature="s",
                                       body=[PROXY]))
        assert reply is not None
        return bool(reply.body[0])
    finally:
        bus.disconnect()
        with contextlib.suppress(Exception):
            await bus.wait_for_disconnect()


async def wait_for_owner(address: str, timeout_s: float = 8.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            with contextlib.suppress(OSError):
                if await has_owner(address):
                    return
            await asyncio.sleep(0.05)


async def health(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url + "/health") as response:
        return response.status


def dbus_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ollama_proxy.dbus"]


@pytest.fixture
def spare_address() -> Iterator[str]:
    directory = Path(tempfile.mkdtemp(prefix="dbus-test-"))
    yield f"unix:path={directory}/bus"
    shutil.rmtree(directory, ignore_errors=True)


async def test_off_means_no_name_on_the_bus(desktop_proxy: Callable[..., Any], session_bus: SessionBus,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ollama_proxy.dbus")
    url = await desktop_proxy(desktop={"dbus": "off"})
    assert not await has_owner(session_bus.address)
    assert await health(url) == 200
    assert dbus_lines(caplog) == []


@pytest.mark.parametrize("address", [None, "unix:path=/nonexistent/bus"], ids=["unset", "nothing-there"])
async def test_auto_without_a_bus_serves_http_and_says_so_once(
        desktop_proxy: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        address: str | None) -> None:
    caplog.set_level(logging.INFO, logger="ollama_proxy.dbus")
    if address is None:
        monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS")
    else:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
    url = await desktop_proxy()
    assert await health(url) == 200
    await asyncio.sleep(0.6)  # past the first retry, had there been one
    records = [r for r in caplog.records if r.name == "ollama_proxy.dbus"]
    assert [r.levelno for r in records] == [logging.INFO]
    assert "the desktop front is off" in records[0].getMessage()


async def test_on_without_an_address_warns_and_serves_http(desktop_proxy: Callable[..., Any],
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS")
    url = await desktop_proxy(desktop={"dbus": "on"})
    assert await health(url) == 200
    warnings = [r for r in caplog.records if r.name == "ollama_proxy.dbus"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert "DBUS_SESSION_BUS_ADDRESS is not set" in warnings[0].getMessage()
    assert "although desktop.dbus is on" in warnings[0].getMessage()


async def test_on_joins_a_bus_that_comes_up_later(desktop_proxy: Callable[..., Any], spare_address: str,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ollama_proxy.dbus")
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", spare_address)
    url = await desktop_proxy(desktop={"dbus": "on"})
    assert await health(url) == 200
    late = SessionBus(spare_address)
    late.start()
    try:
        await wait_for_owner(spare_address)
    finally:
        late.stop()
    lines = dbus_lines(caplog)
    assert "does not answer" in lines[0] and "retrying in the background" in lines[0]
    assert any(line.startswith("on the D-Bus session bus as ie.fio.OllamaProxy, after") for line in lines)


async def test_the_name_comes_back_after_the_bus_restarts(desktop_proxy: Callable[..., Any], session_bus: SessionBus,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ollama_proxy.dbus")
    url = await desktop_proxy()
    assert await has_owner(session_bus.address)
    session_bus.stop()
    await asyncio.sleep(0.5)  # the proxy notices and retries against nothing a few times
    assert await health(url) == 200
    session_bus.start()
    await wait_for_owner(session_bus.address)
    client = await MessageBus(bus_address=session_bus.address).connect()
    try:
        signals = SignalRecorder(client)
        await signals.listen()
        async with aiohttp.ClientSession() as session, \
                session.post(url + "/efficiency", json={"mode": "performance"}) as response:
            assert response.status == 200
        await signals.wait_for("ModeChanged", lambda body: body[0] == "performance")
    finally:
        client.disconnect()
        with contextlib.suppress(Exception):
            await client.wait_for_disconnect()
    lines = dbus_lines(caplog)
    assert sum("lost the D-Bus session bus" in line for line in lines) == 1
    assert lines[0] == "on the D-Bus session bus as ie.fio.OllamaProxy"
    assert sum(line.startswith("on the D-Bus session bus as ie.fio.OllamaProxy, after") for line in lines) == 1
    assert len(lines) == 3, lines


async def test_a_reload_is_followed_and_its_mode_change_signalled(sim_factory: Callable[..., Any],
                                                                  session_bus: SessionBus,
                                                                  signals: SignalRecorder) -> None:
    sim = await sim_factory()
    base = {"backends": [{"id": "sim", "endpoint": sim.url}],
            "system": {"sysfs_root": "/nonexistent", "nvidia_smi": "/nonexistent/nvidia-smi"}}
    reloaded = {**base, "router": {"default_mode": "quiet"}}
    runner = await start(validate(base), host="127.0.0.1", port=0, load=lambda: validate(reloaded))
    try:
        url = f"http://127.0.0.1:{bound_port(runner)}"
        async with aiohttp.ClientSession() as session, session.post(url + "/admin/reload") as response:
            assert response.status == 200, await response.text()
        assert await signals.wait_for("ModeChanged") == ["quiet", "quiet", "set to quiet"]
        # The fresh router reports its own changes too.
        async with aiohttp.ClientSession() as session, \
                session.post(url + "/efficiency", json={"mode": "efficiency"}) as response:
            assert response.status == 200
        await signals.wait_for("ModeChanged", lambda body: body[0] == "efficiency")
    finally:
        await runner.cleanup()
