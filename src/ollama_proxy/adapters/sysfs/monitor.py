"""SystemMonitor: samples every system reader on a timer and keeps auto mode up to date.

The sysfs reads block, so they run in a worker thread; nvidia-smi runs as an asyncio
subprocess. Each snapshot goes through the core's `resolve_auto_mode`, and a change of the
mode `auto` stands for is logged with its cause and handed to every subscriber (the D-Bus and
desktop adapters subscribe). The monitor knows nothing of HTTP or of the mode the user set:
callers combine `auto_state` with that through `core.efficiency.effective_mode`.

Lifecycle, for aiohttp's cleanup_ctx::

    async def system_ctx(app):
        async with SystemMonitor(config.system) as monitor:
            app[MONITOR] = monitor
            yield
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ollama_proxy.adapters.sysfs.nvidia import read_nvidia
from ollama_proxy.adapters.sysfs.power import read_power
from ollama_proxy.adapters.sysfs.thermal import read_hwmon, read_thermal_zones
from ollama_proxy.config.schema import SystemConfig
from ollama_proxy.core.modes import EfficiencyMode
from ollama_proxy.core.system.efficiency import AutoState, resolve_auto_mode
from ollama_proxy.core.system.telemetry import SystemSnapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModeChange:
    """Auto mode now stands for `mode` (previous is None for the first decision)."""

    previous: EfficiencyMode | None
    mode: EfficiencyMode
    reason: str
    at: float


ModeListener = Callable[[ModeChange], None]


async def take_snapshot(config: SystemConfig, now: Callable[[], float] = time.monotonic) -> SystemSnapshot:
    """Read every source once; absent sensors are simply missing from the result."""
    root = Path(config.sysfs_root)
    (zones, (sensors, fans), power), gpus = await asyncio.gather(
        asyncio.to_thread(lambda: (read_thermal_zones(root), read_hwmon(root), read_power(root))),
        read_nvidia(config.nvidia_smi),
    )
    return SystemSnapshot(now(), zones, sensors, fans, power, gpus)


class SystemMonitor:
    """Latest system snapshot and auto-mode state, refreshed every `poll_interval_s`.

    `clock` must be monotonic; tests pass their own. Listeners are called on the event loop
    and must not block; an async consumer can subscribe a queue's `put_nowait`.
    """

    def __init__(self, config: SystemConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._snapshot: SystemSnapshot | None = None
        self._auto = AutoState()
        self._listeners: list[ModeListener] = []
        self._task: asyncio.Task[Any] | None = None

    @property
    def snapshot(self) -> SystemSnapshot | None:
        """The latest snapshot, None until the first sample has been taken."""
        return self._snapshot

    @property
    def auto_state(self) -> AutoState:
        return self._auto

    def subscribe(self, listener: ModeListener) -> Callable[[], None]:
        """Call `listener` on every auto-mode change; returns the function that unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):  # already unsubscribed
                self._listeners.remove(listener)

        return unsubscribe

    async def sample_once(self) -> SystemSnapshot:
        snapshot = await take_snapshot(self._config, self._clock)
        self.observe(snapshot)
        return snapshot

    def observe(self, snapshot: SystemSnapshot) -> None:
        """Take a snapshot as the latest and re-resolve auto mode; public so simulations can inject."""
        previous = self._auto.mode
        mode, reason, self._auto = resolve_auto_mode(snapshot, self._config, self._auto, snapshot.taken_at)
        self._snapshot = snapshot
        if mode == previous:
            return
        # The first resolution is start-up news the start-up line reports, in force or not.
        log.log(logging.INFO if previous else logging.DEBUG, "the machine's state now calls for %s under "
                "auto mode (was %s): %s", mode, previous or "unknown", reason)
        change = ModeChange(previous, mode, reason, snapshot.taken_at)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("efficiency mode listener %r failed", listener)

    async def __aenter__(self) -> SystemMonitor:
        # Sample before returning so GET /thermal and auto mode have data from the first request.
        await self._sample_logged()
        # Kept in self._task and cancelled on exit: the monitor owns its one task.
        self._task = asyncio.get_running_loop().create_task(self._run(), name="system-monitor")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._config.poll_interval_s)
            await self._sample_logged()

    async def _sample_logged(self) -> None:
        # Readers already turn missing sensors into absent readings; anything reaching here is a
        # bug, and it must not stop the polling for good.
        try:
            await self.sample_once()
        except Exception:
            log.exception("system sampling failed; keeping the previous snapshot")
