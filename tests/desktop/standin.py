"""A dbus-fast stand-in for the proxy's Efficiency and Routing interfaces (docs/dbus.md), for the
extension's fast test; it prints each SetMode it receives."""

import asyncio
import sys

from dbus_fast import PropertyAccess
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface, dbus_property, method, signal

MODES = ["performance", "balanced", "efficiency", "quiet", "auto", "ultra-efficiency"]


class Efficiency(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("ie.fio.OllamaProxy.Efficiency")
        self.mode = "balanced"

    @method()
    def ListModes(self) -> "as":  # noqa: F722
        return MODES

    @method()
    def SetMode(self, mode: "s") -> "b":  # noqa: F821
        print(f"SetMode {mode}", flush=True)
        self.mode = mode
        self.ModeChanged()
        return True

    @signal()
    def ModeChanged(self) -> "sss":  # noqa: F821
        return [self.mode, self.mode, "set over D-Bus"]

    @dbus_property(access=PropertyAccess.READ)
    def Mode(self) -> "s":  # noqa: F821
        return self.mode

    @dbus_property(access=PropertyAccess.READ)
    def EffectiveMode(self) -> "s":  # noqa: F821
        return self.mode


class Routing(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("ie.fio.OllamaProxy.Routing")

    @dbus_property(access=PropertyAccess.READ)
    def LastBackend(self) -> "s":  # noqa: F821
        return "npu"


async def main() -> None:
    bus = await MessageBus().connect()
    bus.export("/ie/fio/OllamaProxy", Efficiency())
    bus.export("/ie/fio/OllamaProxy", Routing())
    await bus.request_name("ie.fio.OllamaProxy")
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
