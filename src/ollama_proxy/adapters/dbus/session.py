"""The proxy on the session bus: dbus-fast on the proxy's own event loop, no GLib main loop.

It owns the connection: exports the interfaces (`interfaces.py`) at `/ie/fio/OllamaProxy`, asks for
the name `ie.fio.OllamaProxy`, and when the bus goes away (a session restarting, a dbus-daemon
killed) reconnects with backoff, logging once per outage. Changes that have no event of their own
(backend health, the thermal and power state, the latest request's backend) are found by comparing
once a second, which is also the promised cap on how often `LastBackend` changes; mode changes come
from the front (`front.py`) as they happen. Notifications go to `org.freedesktop.Notifications`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from dbus_fast import Message, MessageType, RequestNameReply, Variant
from dbus_fast.aio import MessageBus

from ollama_proxy.adapters.dbus.interfaces import BUS_NAME, OBJECT_PATH, Exported, battery_percent
from ollama_proxy.core.notices import Notice, NoticeKind, thermal_notice

if TYPE_CHECKING:
    from ollama_proxy.adapters.dbus.front import DesktopFront, ModeTriple

log = logging.getLogger("ollama_proxy.dbus")

TICK_S = 1.0
CONNECT_TIMEOUT_S = 5.0
RETRY_FIRST_S, RETRY_MAX_S = 0.25, 10.0
NOTIFY_TIMEOUT_S = 5.0
APP_NAME = "Ollama Proxy"


class Session:
    def __init__(self, address: str, front: DesktopFront) -> None:
        self._address = address
        self._front = front
        self._bus: MessageBus | None = None
        # Done when the connection ends; never cancelled (that would cancel dbus-fast's own future).
        self._gone: asyncio.Future[None] | None = None
        self._exported: Exported | None = None
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._notice_ids: dict[NoticeKind, int] = {}
        self._notices_failing = False
        # What was last announced, compared on every tick.
        self._health: dict[str, str] = {}
        self._thermal = ""
        self._power: tuple[bool, float] = (False, -1.0)
        self._last_backend = ""

    async def connect(self) -> Exception | None:
        """Join the bus once: connect, export, ask for the name. Returns what failed, if anything."""
        bus = MessageBus(bus_address=self._address)
        try:
            await asyncio.wait_for(bus.connect(), CONNECT_TIMEOUT_S)
            exported = Exported(lambda: self._front.views)
            for interface in exported:
                bus.export(OBJECT_PATH, interface)
            reply = await asyncio.wait_for(bus.request_name(BUS_NAME), CONNECT_TIMEOUT_S)
        except Exception as exc:  # whatever the cause (no socket, refused, auth, timeout), there is no bus now
            if bus.connected:
                bus.disconnect()
            return exc
        if reply is RequestNameReply.IN_QUEUE:
            log.warning("another process owns %s on the session bus: this proxy takes it over when that one "
                        "leaves", BUS_NAME)
        self._bus, self._exported = bus, exported
        self._gone = asyncio.ensure_future(bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
        self._remember()
        return None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dbus-session")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sending in list(self._sending):
            sending.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        if self._bus is not None and self._gone is not None:
            self._bus.disconnect()
            with contextlib.suppress(Exception):
                await self._gone
            self._bus = self._exported = None

    def mode_changed(self, previous: ModeTriple, now: ModeTriple) -> None:
        if self._exported is None:
            return
        efficiency = self._exported.efficiency
        efficiency.ModeChanged(*now)
        changed = {name: value for name, value, before in zip(("Mode", "EffectiveMode", "Reason"), now, previous,
                                                              strict=True) if value != before}
        efficiency.emit_properties_changed(changed)

    def notify(self, notice: Notice) -> None:
        if self._bus is None:
            return
        sending = asyncio.get_running_loop().create_task(self._send_notice(self._bus, notice), name="dbus-notify")
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)

    async def _run(self) -> None:
        while True:
            if self._bus is None:
                await self._reconnect()
            await self._serve()
            log.warning("lost the D-Bus session bus at %s: reconnecting in the background", self._address)

    async def _reconnect(self) -> None:
        loop = asyncio.get_running_loop()
        since, delay = loop.time(), RETRY_FIRST_S
        while True:
            await asyncio.sleep(delay)
            if await self.connect() is None:
                log.info("on the D-Bus session bus as %s, after %.1f s of retrying", BUS_NAME, loop.time() - since)
                return
            delay = min(delay * 2, RETRY_MAX_S)

    async def _serve(self) -> None:
        """Until the bus goes away: compare and announce once a tick."""
        gone = self._gone
        assert gone is not None
        while not gone.done():
            await asyncio.wait([gone], timeout=TICK_S)
            if not gone.done():
                try:
                    self._announce()
                except Exception:  # a bug here must not end the front for good: the next tick tries again
                    log.exception("announcing the proxy's state over D-Bus failed")
        self._bus = self._exported = None
        gone.exception()  # EOFError when the daemon died: expected, and retrieved so it is not reported

    def _state(self) -> tuple[dict[str, str], dict[str, Any], tuple[bool, float], str]:
        views = self._front.views
        power = views.power_state()
        return (views.backend_health(), views.thermal_state(), (bool(power["on_battery"]), battery_percent(power)),
                views.last_backend())

    def _remember(self) -> None:
        """Take the state as it is on joining as the base later changes are announced against."""
        self._health, thermal, self._power, self._last_backend = self._state()
        self._thermal = thermal["state"]

    def _announce(self) -> None:
        exported = self._exported
        assert exported is not None
        health, thermal, power, last_backend = self._state()
        for backend_id, state in health.items():
            if self._health.get(backend_id, state) != state:
                exported.backends.BackendStateChanged(backend_id, state)
        self._health = health
        if thermal["state"] != self._thermal:
            previous, self._thermal = self._thermal, thermal["state"]
            exported.thermal.ThermalEvent(thermal["state"], thermal["detail"])
            notice = thermal_notice(previous, thermal["state"], thermal["detail"])
            if notice is not None:
                self._front.notify(notice)
        if power != self._power:
            changed = {name: value for name, value, before in zip(("OnBattery", "BatteryPercent"), power,
                                                                  self._power, strict=True) if value != before}
            self._power = power
            exported.system.emit_properties_changed(changed)
        if last_backend != self._last_backend:
            self._last_backend = last_backend
            exported.routing.emit_properties_changed({"LastBackend": last_backend})

    async def _send_notice(self, bus: MessageBus, notice: Notice) -> None:
        message = Message(destination="org.freedesktop.Notifications", path="/org/freedesktop/Notifications",
                          interface="org.freedesktop.Notifications", member="Notify", signature="susssasa{sv}i",
                          body=[APP_NAME, self._notice_ids.get(notice.kind, 0), notice.icon, notice.summary,
                                notice.body, [], {"urgency": Variant("y", int(notice.urgency))}, -1])
        try:
            reply = await asyncio.wait_for(bus.call(message), NOTIFY_TIMEOUT_S)
        except Exception as exc:  # the bus went away meanwhile, or no answer: the notice is lost, nothing else
            failure = str(exc) or type(exc).__name__
        else:
            if reply is not None and reply.message_type is not MessageType.ERROR:
                self._notices_failing = False
                self._notice_ids[notice.kind] = int(reply.body[0])
                return
            failure = str(reply.error_name) if reply is not None else "no reply"
        if not self._notices_failing:
            log.info("desktop notifications are not delivered (%s); desktop.notifications: false stops trying",
                     failure)
        self._notices_failing = True
