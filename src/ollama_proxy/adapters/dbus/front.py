"""The desktop front: whether to be on the session bus, what changed, what to notify.

It knows no D-Bus types: `session.py` (dbus-fast, imported only when the front starts, since most
proxies on servers never use it) holds the connection. This module decides from `desktop.dbus`
whether to start one, hears every efficiency-mode change (the router's `on_mode_change` for modes
set over D-Bus or HTTP, the system monitor's subscription for auto mode) and hands the session each
change once, and keeps the notification rules (`core.notices`) and their rate limit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ollama_proxy.adapters.sysfs.monitor import ModeChange, SystemMonitor
from ollama_proxy.config.schema import DesktopConfig
from ollama_proxy.core.modes import EfficiencyMode
from ollama_proxy.core.notices import Notice, NoticeLimiter, auto_switch_notice
from ollama_proxy.service.status import StatusViews

if TYPE_CHECKING:
    from ollama_proxy.adapters.dbus.session import Session

log = logging.getLogger("ollama_proxy.dbus")

ModeTriple = tuple[str, str, str]


class DesktopFront:
    def __init__(self, config: DesktopConfig, views: StatusViews, monitor: SystemMonitor | None, *,
                 clock: Callable[[], float]) -> None:
        self._config = config
        self._monitor = monitor
        self._clock = clock
        self._limiter = NoticeLimiter()
        self._session: Session | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.views = views
        self.mode = self._mode_now()
        views.router.on_mode_change = self.mode_changed

    def follow(self, config: DesktopConfig, views: StatusViews) -> None:
        """Serve the views a configuration reload built; its default mode may differ from the last."""
        self._config = config.model_copy(update={"dbus": self._config.dbus})  # on or off needs a restart
        self.views = views
        views.router.on_mode_change = self.mode_changed
        self.mode_changed()

    async def start(self) -> None:
        """Join the session bus when `desktop.dbus` says so and one is there; never fails the proxy."""
        setting = self._config.dbus
        if setting == "off":
            return
        address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
        if not address:
            log.log(logging.WARNING if setting == "on" else logging.INFO, "no D-Bus session bus "
                    "(DBUS_SESSION_BUS_ADDRESS is not set): the desktop front is off%s",
                    " although desktop.dbus is on" if setting == "on" else "")
            return
        from ollama_proxy.adapters.dbus.interfaces import BUS_NAME
        from ollama_proxy.adapters.dbus.session import Session

        session = Session(address, self)
        error = await session.connect()
        if error is not None and setting == "auto":
            log.info("no D-Bus session bus answers at %s (%s): the desktop front is off", address, error)
            return
        if error is not None:
            log.warning("desktop.dbus is on but the session bus at %s does not answer (%s): retrying in the "
                        "background, HTTP serves meanwhile", address, error)
        else:
            log.info("on the D-Bus session bus as %s", BUS_NAME)
        self._session = session
        session.start()
        if self._monitor is not None:
            self._unsubscribe = self._monitor.subscribe(self._auto_changed)

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def mode_changed(self) -> None:
        """Signal the mode, the mode in force and why, when any of them differs from what was signalled."""
        previous, self.mode = self.mode, self._mode_now()
        if self.mode != previous and self._session is not None:
            self._session.mode_changed(previous, self.mode)

    def notify(self, notice: Notice) -> None:
        if self._config.notifications and self._session is not None and self._limiter.allow(notice.kind,
                                                                                             self._clock()):
            self._session.notify(notice)

    def _auto_changed(self, _: ModeChange) -> None:
        before = self.mode
        self.mode_changed()
        notice = auto_switch_notice(self.views.router.set_mode, EfficiencyMode(before[1]),
                                    EfficiencyMode(self.mode[1]), self.mode[2])
        if notice is not None:
            self.notify(notice)

    def _mode_now(self) -> ModeTriple:
        efficiency = self.views.efficiency()
        return efficiency["mode"], efficiency["effective_mode"], efficiency["reason"]
