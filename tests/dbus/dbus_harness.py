"""Helpers for the D-Bus tests: a private dbus-daemon that can be killed and started again at the
same address, a recorder of the proxy's signals, a fake notification server, and a fake sysfs tree."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path
from typing import Annotated, Any

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusDict, DBusInt32, DBusSignature, DBusStr, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method

SESSION_CONF = "/usr/share/dbus-1/session.conf"
needs_dbus = pytest.mark.skipif(
    shutil.which("dbus-daemon") is None or shutil.which("gdbus") is None or not os.path.exists(SESSION_CONF),
    reason="needs dbus-daemon, gdbus and the session bus config (Debian: dbus-daemon, libglib2.0-bin)")
PROXY = "ie.fio.OllamaProxy"


class SessionBus:
    def __init__(self, address: str) -> None:
        self.address = address
        self._daemon: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._daemon = subprocess.Popen(
            ["dbus-daemon", f"--config-file={SESSION_CONF}", f"--address={self.address}", "--nofork",
             "--print-address=1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self._daemon.stdout is not None
        # The address is printed once the socket listens.
        assert self._daemon.stdout.readline().startswith(self.address.encode())
        self._daemon.stdout.close()

    def stop(self) -> None:
        if self._daemon is not None:
            self._daemon.kill()
            self._daemon.wait()
            self._daemon = None


async def gdbus(*args: str) -> tuple[int, str, str]:
    """Run gdbus (on DBUS_SESSION_BUS_ADDRESS) without blocking the loop the proxy serves on."""
    process = await asyncio.create_subprocess_exec("gdbus", *args, stdout=subprocess.PIPE,
                                                   stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class SignalRecorder:
    """Every signal the proxy sends, as (interface, member, body, loop time of arrival)."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.seen: list[tuple[str, str, list[Any], float]] = []
        self._arrived = asyncio.Event()

    async def listen(self) -> None:
        reply = await self.bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus", interface="org.freedesktop.DBus",
            member="AddMatch", signature="s", body=[f"type='signal',sender='{PROXY}'"]))
        assert reply is not None and reply.message_type is MessageType.METHOD_RETURN
        self.bus.add_message_handler(self._record)

    def _record(self, message: Message) -> None:
        if message.message_type is MessageType.SIGNAL and message.path == "/ie/fio/OllamaProxy":
            self.seen.append((str(message.interface), str(message.member), list(message.body),
                              asyncio.get_running_loop().time()))
            self._arrived.set()

    def of(self, member: str, interface: str | None = None) -> list[list[Any]]:
        return [body for _, body in self.timed(member, interface)]

    def timed(self, member: str, interface: str | None = None) -> list[tuple[float, list[Any]]]:
        """(arrival, body) of each such signal; `interface` matches a PropertiesChanged's subject too."""
        return [(at, body) for i, m, body, at in self.seen
                if m == member and (interface is None or interface in (i, body[0]))]

    async def wait_for(self, member: str, predicate: Any = lambda body: True, *, interface: str | None = None,
                       timeout_s: float = 8.0) -> list[Any]:
        """The first such signal (already seen or still to come) whose body satisfies `predicate`."""
        async with asyncio.timeout(timeout_s):
            while True:
                found = [body for body in self.of(member, interface) if predicate(body)]
                if found:
                    return found[0]
                self._arrived.clear()
                await self._arrived.wait()

    def changed(self, interface: str) -> dict[str, Any]:
        """Every property PropertiesChanged announced for `interface`, the latest value of each."""
        merged: dict[str, Any] = {}
        for body in self.of("PropertiesChanged", interface):
            merged.update({name: variant.value for name, variant in body[1].items()})
        return merged


StringList = Annotated[list[str], DBusSignature("as")]


class FakeNotifications(ServiceInterface):
    """org.freedesktop.Notifications, recording each Notify as (summary, body, hints)."""

    def __init__(self) -> None:
        super().__init__("org.freedesktop.Notifications")
        self.received: list[tuple[str, str, dict[str, Any]]] = []

    @dbus_method()
    def Notify(self, app_name: DBusStr, replaces_id: DBusUInt32, app_icon: DBusStr, summary: DBusStr,
               body: DBusStr, actions: StringList, hints: DBusDict, expire_timeout: DBusInt32) -> DBusUInt32:
        self.received.append((summary, body, {k: v.value for k, v in hints.items()}))
        return len(self.received)

    @dbus_method()
    def GetCapabilities(self) -> StringList:
        return ["body"]

    @dbus_method()
    def GetServerInformation(self) -> Annotated[list[str], DBusSignature("ssss")]:
        return ["fake", "ollama-proxy tests", "1", "1.2"]


async def serve_notifications(address: str) -> tuple[MessageBus, FakeNotifications]:
    bus = await MessageBus(bus_address=address).connect()
    server = FakeNotifications()
    bus.export("/org/freedesktop/Notifications", server)
    await bus.request_name("org.freedesktop.Notifications")
    return bus, server


class Sysfs:
    """A fake /sys with a battery and a CPU package sensor, rewritten while the proxy samples it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, relative: str, value: object) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(f"{value}\n")
        os.replace(tmp, path)  # atomic: a sample never sees half a number

    def power(self, *, plugged: bool, percent: int) -> None:
        # The mains last: a sample between two writes sees the old supply, never a battery at its old charge.
        self.write("class/power_supply/BAT0/type", "Battery")
        self.write("class/power_supply/BAT0/capacity", percent)
        self.write("class/power_supply/BAT0/status", "Charging" if plugged else "Discharging")
        self.write("class/power_supply/AC/type", "Mains")
        self.write("class/power_supply/AC/online", int(plugged))

    def cpu(self, celsius: float) -> None:
        self.write("class/hwmon/hwmon0/name", "coretemp")
        self.write("class/hwmon/hwmon0/temp1_label", "Package id 0")
        self.write("class/hwmon/hwmon0/temp1_crit", 100_000)
        self.write("class/hwmon/hwmon0/temp1_input", int(celsius * 1000))

    def system_config(self) -> dict[str, Any]:
        return {"sysfs_root": str(self.root), "nvidia_smi": "/nonexistent/nvidia-smi", "poll_interval_s": 0.05,
                "min_dwell_s": 0}


def variant_values(record: dict[str, Variant]) -> dict[str, Any]:
    return {name: variant.value for name, variant in record.items()}
