"""What the machine does, over D-Bus: auto mode's switches, the thermal and power state, and the desktop
notifications they bring (to a fake org.freedesktop.Notifications on the private bus)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from dbus_fast import Message
from dbus_fast.aio import MessageBus
from dbus_harness import PROXY, FakeNotifications, SessionBus, SignalRecorder, Sysfs, needs_dbus, serve_notifications
from dbus_harness import variant_values as values

pytestmark = needs_dbus


@pytest.fixture
async def notifications(session_bus: SessionBus) -> AsyncIterator[FakeNotifications]:
    bus, server = await serve_notifications(session_bus.address)
    yield server
    bus.disconnect()
    with contextlib.suppress(Exception):
        await bus.wait_for_disconnect()


async def thermal_state(client: MessageBus) -> dict[str, Any]:
    reply = await client.call(Message(destination=PROXY, path="/ie/fio/OllamaProxy",
                                      interface=f"{PROXY}.Thermal", member="GetState"))
    assert reply is not None
    return values(reply.body[0])


async def test_auto_mode_switches_signal_and_notify_once_a_minute(
        desktop_proxy: Callable[..., Any], sysfs: Sysfs, signals: SignalRecorder,
        notifications: FakeNotifications) -> None:
    await desktop_proxy(router={"default_mode": "auto"})
    sysfs.power(plugged=False, percent=60)
    changed = await signals.wait_for("ModeChanged", lambda body: body[1] == "efficiency")
    assert changed == ["auto", "efficiency", "auto: on battery (60%)"]
    await signals.wait_for("PropertiesChanged", interface=f"{PROXY}.Efficiency")  # sent right after it
    assert signals.changed(f"{PROXY}.Efficiency") == {"EffectiveMode": "efficiency",
                                                      "Reason": "auto: on battery (60%)"}
    power = await signals.wait_for("PropertiesChanged", lambda body: body[1].get("OnBattery"),
                                   interface=f"{PROXY}.SystemState")
    assert {k: v.value for k, v in power[1].items()} == {"OnBattery": True, "BatteryPercent": 60.0}
    sysfs.power(plugged=False, percent=10)
    await signals.wait_for("ModeChanged", lambda body: body[1] == "ultra-efficiency")
    await asyncio.sleep(0.3)  # a second notice would have arrived by now
    # Two switches within the minute: one notification, for the first.
    assert notifications.received == [("AI efficiency: efficiency",
                                       "Auto mode switched from balanced to efficiency: on battery (60%)",
                                       {"urgency": 1})]


async def test_thermal_state_events_and_their_notification(desktop_proxy: Callable[..., Any], sysfs: Sysfs,
                                                           signals: SignalRecorder, client: MessageBus,
                                                           notifications: FakeNotifications) -> None:
    sysfs.write("class/hwmon/hwmon0/fan1_input", 2500)
    await desktop_proxy()
    state = await thermal_state(client)
    assert state == {"temperatures": {"coretemp Package id 0": 50.0}, "fans": {"coretemp fan1": 2500},
                     "throttling": False, "state": "cool",
                     "detail": "cpu package (coretemp Package id 0) 50C < warm 70C"}
    sysfs.cpu(90)
    event = await signals.wait_for("ThermalEvent")
    assert event == ["hot", "cpu package (coretemp Package id 0) 90C >= hot 80C"]
    assert (await thermal_state(client))["state"] == "hot"
    # The mode was set by hand (balanced): auto's reaction to the heat is no news, the heat is.
    assert not signals.of("ModeChanged")
    async with asyncio.timeout(5):
        while not notifications.received:
            await asyncio.sleep(0.05)
    summary, body, hints = notifications.received[0]
    assert summary == "The machine is hot" and body.startswith("cpu package (coretemp Package id 0) 90C >= hot 80C")
    assert hints == {"urgency": 1}


async def test_no_notifications_when_they_are_off(desktop_proxy: Callable[..., Any], sysfs: Sysfs,
                                                  signals: SignalRecorder,
                                                  notifications: FakeNotifications) -> None:
    await desktop_proxy(router={"default_mode": "auto"}, desktop={"notifications": False})
    sysfs.power(plugged=False, percent=60)
    sysfs.cpu(90)
    await signals.wait_for("ModeChanged", lambda body: body[1] == "efficiency")
    await signals.wait_for("ThermalEvent")
    await asyncio.sleep(0.3)
    assert notifications.received == []
