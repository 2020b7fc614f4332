"""The five interfaces of docs/dbus.md as dbus-fast service interfaces over the status views.

Each reads the views through `views()` at call time, so a configuration reload (which builds new
views) is followed without re-exporting anything. Failures a caller can cause are named errors
(`ie.fio.OllamaProxy.Error.*`); dbus-fast turns anything else into a generic error reply and logs
it, so no call reaches the proxy's loop as an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, ClassVar

from dbus_fast import DBusError, PropertyAccess, Variant
from dbus_fast import introspection as intr
from dbus_fast.annotations import DBusBool, DBusDict, DBusDouble, DBusSignature, DBusStr, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from ollama_proxy.service.status import StatusViews

BUS_NAME = "ie.fio.OllamaProxy"
OBJECT_PATH = "/ie/fio/OllamaProxy"
ERROR = f"{BUS_NAME}.Error"

Views = Callable[[], StatusViews]
Records = Annotated[list[dict[str, Variant]], DBusSignature("aa{sv}")]
Strings = Annotated[list[str], DBusSignature("as")]
Counts = Annotated[dict[str, int], DBusSignature("a{st}")]
TwoStrings = Annotated[list[str], DBusSignature("ss")]
ThreeStrings = Annotated[list[str], DBusSignature("sss")]

# The D-Bus type of each field of the plain records the views return.
BACKEND_FIELDS = {"id": "s", "name": "s", "hardware": "s", "health": "s", "models": "as", "loaded": "a{su}",
                  "queued": "u", "in_flight": "u", "power_watts": "d", "thermal": "s", "url": "s"}
DECISION_FIELDS = {"request_id": "s", "backend": "s", "model": "s", "reason": "s", "at": "d", "operation": "s",
                   "status": "u", "num_ctx": "u"}
THERMAL_FIELDS = {"temperatures": "a{sd}", "fans": "a{su}", "throttling": "b", "state": "s", "detail": "s"}


def variants(record: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, Variant]:
    return {name: Variant(signature, record[name]) for name, signature in fields.items()}


def decision_record(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A decision-log entry with D-Bus-safe values: no None (D-Bus has no null), reason = why it went
    where it went, or what went wrong when it went nowhere."""
    return {"request_id": entry["request_id"] or "", "backend": entry["backend"] or "", "model": entry["model"] or "",
            "reason": entry["routing_reason"] or entry["error"] or "", "at": float(entry["at"]),
            "operation": entry["operation"], "status": entry["status"], "num_ctx": entry["num_ctx"] or 0}


class _Interface(ServiceInterface):
    """Introspection with the argument names of docs/dbus.md (dbus-fast names results and signal
    arguments arg_0, arg_1, ...): `ARGS` maps a member to its out or signal arguments' names."""

    ARGS: ClassVar[dict[str, tuple[str, ...]]] = {}

    def introspect(self) -> intr.Interface:
        described = super().introspect()
        for method in described.methods:
            for arg, name in zip(method.out_args, self.ARGS.get(method.name, ()), strict=False):
                arg.name = name
        for signal in described.signals:
            for arg, name in zip(signal.args, self.ARGS.get(signal.name, ()), strict=False):
                arg.name = name
        return described


class Efficiency(_Interface):
    ARGS: ClassVar[dict[str, tuple[str, ...]]] = {"GetMode": ("mode",), "SetMode": ("ok",), "ListModes": ("modes",),
                                                  "ModeChanged": ("mode", "effective", "reason")}

    def __init__(self, views: Views) -> None:
        super().__init__(f"{BUS_NAME}.Efficiency")
        self._views = views

    @dbus_method()
    def GetMode(self) -> DBusStr:
        return str(self._views().efficiency()["mode"])

    @dbus_method()
    def SetMode(self, mode: DBusStr) -> DBusBool:
        try:
            self._views().set_mode(mode)
        except ValueError as exc:
            raise DBusError(f"{ERROR}.UnknownMode", str(exc)) from None
        return True

    @dbus_method()
    def ListModes(self) -> Strings:
        return list(self._views().efficiency()["modes"])

    @dbus_property(access=PropertyAccess.READ)
    def Mode(self) -> DBusStr:
        return str(self._views().efficiency()["mode"])

    @dbus_property(access=PropertyAccess.READ)
    def EffectiveMode(self) -> DBusStr:
        return str(self._views().efficiency()["effective_mode"])

    @dbus_property(access=PropertyAccess.READ)
    def Reason(self) -> DBusStr:
        return str(self._views().efficiency()["reason"])

    @dbus_signal()
    def ModeChanged(self, mode: str, effective: str, reason: str) -> ThreeStrings:
        return [mode, effective, reason]


class Backends(_Interface):
    ARGS: ClassVar[dict[str, tuple[str, ...]]] = {"List": ("backends",), "GetStatus": ("status",),
                                                  "BackendStateChanged": ("id", "state")}

    def __init__(self, views: Views) -> None:
        super().__init__(f"{BUS_NAME}.Backends")
        self._views = views

    @dbus_method()
    def List(self) -> Records:
        return [variants(b, BACKEND_FIELDS) for b in self._views().backend_summaries()]

    @dbus_method()
    def GetStatus(self, id: DBusStr) -> DBusDict:
        summaries = self._views().backend_summaries()
        found = next((b for b in summaries if b["id"] == id), None)
        if found is None:
            known = ", ".join(b["id"] for b in summaries) or "none"
            raise DBusError(f"{ERROR}.UnknownBackend", f"no backend {id!r}; configured: {known}")
        return variants(found, BACKEND_FIELDS)

    @dbus_signal()
    def BackendStateChanged(self, backend_id: str, state: str) -> TwoStrings:
        return [backend_id, state]


class Routing(_Interface):
    ARGS: ClassVar[dict[str, tuple[str, ...]]] = {"GetCounts": ("counts",), "RecentDecisions": ("decisions",)}

    def __init__(self, views: Views) -> None:
        super().__init__(f"{BUS_NAME}.Routing")
        self._views = views

    @dbus_method()
    def GetCounts(self) -> Counts:
        return self._views().routed_counts()

    @dbus_method()
    def RecentDecisions(self, limit: DBusUInt32) -> Records:
        return [variants(decision_record(e), DECISION_FIELDS) for e in self._views().decisions.recent(limit)]

    @dbus_property(access=PropertyAccess.READ)
    def LastBackend(self) -> DBusStr:
        return self._views().last_backend()


class Thermal(_Interface):
    ARGS: ClassVar[dict[str, tuple[str, ...]]] = {"GetState": ("state",), "ThermalEvent": ("state", "detail")}

    def __init__(self, views: Views) -> None:
        super().__init__(f"{BUS_NAME}.Thermal")
        self._views = views

    @dbus_method()
    def GetState(self) -> DBusDict:
        state = self._views().thermal_state()
        return variants({**state, "fans": {fan: round(rpm) for fan, rpm in state["fans"].items()}}, THERMAL_FIELDS)

    @dbus_signal()
    def ThermalEvent(self, state: str, detail: str) -> TwoStrings:
        return [state, detail]


class SystemState(_Interface):
    def __init__(self, views: Views) -> None:
        super().__init__(f"{BUS_NAME}.SystemState")
        self._views = views

    @dbus_property(access=PropertyAccess.READ)
    def OnBattery(self) -> DBusBool:
        return bool(self._views().power_state()["on_battery"])

    @dbus_property(access=PropertyAccess.READ)
    def BatteryPercent(self) -> DBusDouble:
        return battery_percent(self._views().power_state())


def battery_percent(power: Mapping[str, Any]) -> float:
    """-1 when unknown (D-Bus has no null)."""
    percent = power["battery_percent"]
    return -1.0 if percent is None else float(percent)


class Exported:
    """The five interfaces as exported on one connection (a reconnect exports a fresh set)."""

    def __init__(self, views: Views) -> None:
        self.efficiency = Efficiency(views)
        self.backends = Backends(views)
        self.routing = Routing(views)
        self.thermal = Thermal(views)
        self.system = SystemState(views)

    def __iter__(self) -> Iterator[ServiceInterface]:
        return iter((self.efficiency, self.backends, self.routing, self.thermal, self.system))
