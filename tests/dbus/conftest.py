"""A private session bus per test, the real proxy on it in front of simulators, and D-Bus clients:
`gdbus` as a subprocess (what a user types) and dbus-fast (signals, typed replies)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast.aio import MessageBus
from dbus_harness import PROXY, SessionBus, SignalRecorder, Sysfs, gdbus

from ollama_proxy.app import bound_port, start
from ollama_proxy.config.load import validate


@pytest.fixture
def session_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[SessionBus]:
    """A dbus-daemon of our own (the machine's session bus, if any, is never touched); the proxy
    started in the test finds it through DBUS_SESSION_BUS_ADDRESS."""
    # Not tmp_path: a unix socket path must stay under 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="dbus-test-"))
    bus = SessionBus(f"unix:path={directory}/bus")
    bus.start()
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", bus.address)
    try:
        yield bus
    finally:
        bus.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def sysfs(tmp_path: Path) -> Sysfs:
    machine = Sysfs(tmp_path / "sys")
    machine.power(plugged=True, percent=80)
    machine.cpu(50)
    return machine


@pytest.fixture
async def client(session_bus: SessionBus) -> AsyncIterator[MessageBus]:
    """A dbus-fast client connection on the private bus."""
    bus = await MessageBus(bus_address=session_bus.address).connect()
    yield bus
    bus.disconnect()
    with contextlib.suppress(Exception):
        await bus.wait_for_disconnect()


@pytest.fixture
async def signals(client: MessageBus) -> SignalRecorder:
    recorder = SignalRecorder(client)
    await recorder.listen()
    return recorder


@pytest.fixture
async def desktop_proxy(session_bus: SessionBus, sim_factory: Callable[..., Any],
                        sysfs: Sysfs) -> AsyncIterator[Callable[..., Any]]:
    """`await desktop_proxy(desktop={...}, router={...})`: the real proxy on the private bus in front of
    two simulators (npu, nvidia), reading `sysfs`; returns its base URL. The simulators are on `.sims`.
    (It stops before the bus does, so a test sees no outage it did not cause.)"""
    async with contextlib.AsyncExitStack() as stack:
        sims: dict[str, Any] = {}

        async def make(*, desktop: dict[str, Any] | None = None, router: dict[str, Any] | None = None,
                       system: dict[str, Any] | None = None) -> str:
            for profile in ("npu", "nvidia"):
                sims[profile] = await sim_factory(profile=profile)
            watts = {"npu": 3, "nvidia": 55}
            config = {
                "backends": [{"id": p, "hardware": p, "endpoint": sim.url,
                              "characteristics": {"power_watts": watts[p]}} for p, sim in sims.items()],
                "router": {"health_interval_s": 0.2, **(router or {})},
                "system": {**sysfs.system_config(), **(system or {})},
                "desktop": desktop or {},
            }
            runner = await start(validate(config), host="127.0.0.1", port=0)
            stack.push_async_callback(runner.cleanup)
            return f"http://127.0.0.1:{bound_port(runner)}"

        make.sims = sims  # type: ignore[attr-defined]
        yield make


@pytest.fixture
def call(session_bus: SessionBus) -> Callable[..., Any]:
    """`await call("ie.fio.OllamaProxy.Efficiency.SetMode", "quiet")` through gdbus."""
    async def run(method: str, *args: str) -> tuple[int, str, str]:
        return await gdbus("call", "--session", "--dest", PROXY, "--object-path", "/ie/fio/OllamaProxy",
                           "--method", method, *args)

    return run
