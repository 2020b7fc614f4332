"""The D-Bus front end to end: the real proxy on a private session bus, driven with gdbus and dbus-fast."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import aiohttp
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_harness import PROXY, SessionBus, SignalRecorder, gdbus, needs_dbus, variant_values

pytestmark = needs_dbus

PATH = "/ie/fio/OllamaProxy"
INTERFACES = ["Efficiency", "Backends", "Routing", "Thermal", "SystemState"]
MODES = ["performance", "balanced", "efficiency", "quiet", "auto", "ultra-efficiency"]


async def dbus_call(client: MessageBus, interface: str, member: str, signature: str = "",
                    body: list[Any] | None = None) -> Message:
    reply = await client.call(Message(destination=PROXY, path=PATH, interface=f"{PROXY}.{interface}",
                                      member=member, signature=signature, body=body or []))
    assert reply is not None
    return reply


async def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(method, url, json=body) as response:
        return response.status, await response.json()


async def chat(url: str, model: str = "llama3.2", headers: dict[str, str] | None = None) -> dict[str, str]:
    body = {"model": model, "stream": False, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as session, \
            session.post(url + "/api/chat", json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        return dict(response.headers)


async def test_introspection_lists_all_five_interfaces_and_their_members(desktop_proxy: Callable[..., Any],
                                                                       session_bus: SessionBus) -> None:
    await desktop_proxy()
    code, out, err = await gdbus("introspect", "--session", "--dest", PROXY, "--object-path", PATH)
    assert code == 0, err
    for name in INTERFACES:
        assert f"interface {PROXY}.{name} {{" in out
    # As docs/dbus.md writes them, arguments named.
    flat = " ".join(out.split())
    for member in ("GetMode(out s mode);", "SetMode(in s mode, out b ok);", "ListModes(out as modes);",
                   "ModeChanged(s mode, s effective, s reason);", "readonly s Mode = 'balanced';",
                   "readonly s EffectiveMode = 'balanced';", "readonly s Reason = 'set to balanced';",
                   "List(out aa{sv} backends);", "GetStatus(in s id, out a{sv} status);",
                   "BackendStateChanged(s id, s state);", "GetCounts(out a{st} counts);",
                   "RecentDecisions(in u limit, out aa{sv} decisions);", "readonly s LastBackend = '';",
                   "GetState(out a{sv} state);", "ThermalEvent(s state, s detail);", "readonly b OnBattery = false;",
                   "readonly d BatteryPercent = 80.0;"):
        assert member in flat, (member, out)


async def test_efficiency_methods_properties_and_mode_changed_from_dbus(
        desktop_proxy: Callable[..., Any], call: Callable[..., Any], signals: SignalRecorder) -> None:
    url = await desktop_proxy()
    assert await call(f"{PROXY}.Efficiency.GetMode") == (0, "('balanced',)\n", "")
    code, out, _ = await call(f"{PROXY}.Efficiency.ListModes")
    assert (code, out) == (0, f"({MODES!r},)\n")
    assert await call(f"{PROXY}.Efficiency.SetMode", "quiet") == (0, "(true,)\n", "")
    changed = await signals.wait_for("ModeChanged")
    assert changed == ["quiet", "quiet", "set to quiet"]
    await signals.wait_for("PropertiesChanged", interface=f"{PROXY}.Efficiency")  # sent right after it
    assert signals.changed(f"{PROXY}.Efficiency") == {"Mode": "quiet", "EffectiveMode": "quiet",
                                                      "Reason": "set to quiet"}
    for prop, value in (("Mode", "quiet"), ("EffectiveMode", "quiet"), ("Reason", "set to quiet")):
        code, out, _ = await call("org.freedesktop.DBus.Properties.Get", f"{PROXY}.Efficiency", prop)
        assert (code, out) == (0, f"(<'{value}'>,)\n")
    assert (await http("GET", url + "/efficiency"))[1]["mode"] == "quiet"
    # Setting the mode in force again changes nothing and says nothing.
    assert await call(f"{PROXY}.Efficiency.SetMode", "quiet") == (0, "(true,)\n", "")
    assert await call(f"{PROXY}.Efficiency.GetMode") == (0, "('quiet',)\n", "")
    assert len(signals.of("ModeChanged")) == 1


async def test_mode_changed_fires_when_http_sets_the_mode(desktop_proxy: Callable[..., Any],
                                                         signals: SignalRecorder, client: MessageBus) -> None:
    url = await desktop_proxy()
    status, body = await http("POST", url + "/efficiency", {"mode": "efficiency"})
    assert (status, body["mode"]) == (200, "efficiency")
    assert await signals.wait_for("ModeChanged") == ["efficiency", "efficiency", "set to efficiency"]
    reply = await dbus_call(client, "Efficiency", "GetMode")
    assert reply.body == ["efficiency"]


async def test_unknown_mode_and_backend_are_named_errors_and_the_proxy_keeps_serving(
        desktop_proxy: Callable[..., Any], call: Callable[..., Any], client: MessageBus) -> None:
    url = await desktop_proxy()
    code, _, err = await call(f"{PROXY}.Efficiency.SetMode", "turbo")
    assert code != 0 and "ie.fio.OllamaProxy.Error.UnknownMode" in err and "allowed: performance" in err
    code, _, err = await call(f"{PROXY}.Backends.GetStatus", "gpu9")
    assert code != 0 and "ie.fio.OllamaProxy.Error.UnknownBackend" in err and "configured: npu, nvidia" in err
    reply = await dbus_call(client, "Efficiency", "SetMode", "s", [""])
    assert (reply.message_type, reply.error_name) == (MessageType.ERROR, "ie.fio.OllamaProxy.Error.UnknownMode")
    # A call with the wrong signature is refused by the library, named too.
    reply = await dbus_call(client, "Backends", "GetStatus", "u", [7])
    assert reply.message_type is MessageType.ERROR
    assert await call(f"{PROXY}.Efficiency.GetMode") == (0, "('balanced',)\n", "")
    assert (await http("GET", url + "/health"))[0] == 200
    await chat(url)


async def test_backends_list_status_and_state_changes(desktop_proxy: Callable[..., Any], client: MessageBus,
                                                     signals: SignalRecorder) -> None:
    url = await desktop_proxy()
    await chat(url)  # loads llama3.2 on one of them
    listing = [variant_values(b) for b in (await dbus_call(client, "Backends", "List")).body[0]]
    assert [b["id"] for b in listing] == ["npu", "nvidia"]
    npu = listing[0]
    assert set(npu) == {"id", "name", "hardware", "health", "models", "loaded", "queued", "in_flight",
                        "power_watts", "thermal", "url"}
    assert (npu["health"], npu["hardware"], npu["power_watts"], npu["queued"], npu["in_flight"]) == (
        "healthy", "npu", 3.0, 0, 0)
    assert "llama3.2:latest" in npu["models"] and npu["url"].startswith("http://127.0.0.1:")
    assert npu["thermal"] == "cool"
    loaded = {b["id"]: b["loaded"] for b in listing}
    assert any(ctx > 0 for ctx in {**loaded["npu"], **loaded["nvidia"]}.values())
    status = await dbus_call(client, "Backends", "GetStatus", "s", ["nvidia"])
    assert variant_values(status.body[0]) == listing[1]
    await desktop_proxy.sims["nvidia"].__aexit__(None, None, None)  # type: ignore[attr-defined]
    # (Each backend's first health check, unknown -> healthy, was news too.)
    await signals.wait_for("BackendStateChanged", lambda body: body == ["nvidia", "down"])
    status = await dbus_call(client, "Backends", "GetStatus", "s", ["nvidia"])
    assert status.body[0]["health"].value == "down"


async def test_routing_counts_recent_decisions_and_last_backend(desktop_proxy: Callable[..., Any],
                                                               client: MessageBus, signals: SignalRecorder,
                                                               call: Callable[..., Any]) -> None:
    url = await desktop_proxy(router={"default_mode": "efficiency"})
    code, out, _ = await call("org.freedesktop.DBus.Properties.Get", f"{PROXY}.Routing", "LastBackend")
    assert (code, out) == (0, "(<''>,)\n")
    used = [(await chat(url, model))["X-Backend-Used"] for model in ("llama3.2", "qwen3:4b", "llama3.2")]
    counts = (await dbus_call(client, "Routing", "GetCounts")).body[0]
    assert counts == {"npu": used.count("npu"), "nvidia": used.count("nvidia")}
    recent = [variant_values(d) for d in (await dbus_call(client, "Routing", "RecentDecisions", "u", [2])).body[0]]
    assert len(recent) == 2
    assert [d["model"] for d in recent] == ["llama3.2", "qwen3:4b"]
    assert recent[0]["backend"] == used[-1] and "mode-efficiency" in recent[0]["reason"]
    assert recent[0]["status"] == 200 and recent[0]["num_ctx"] >= 2048 and recent[0]["at"] >= recent[1]["at"]
    assert recent[0]["request_id"] and recent[0]["operation"] == "chat"
    code, out, _ = await call("org.freedesktop.DBus.Properties.Get", f"{PROXY}.Routing", "LastBackend")
    assert (code, out) == (0, f"(<'{used[-1]}'>,)\n")


async def test_last_backend_is_announced_at_most_once_a_second(desktop_proxy: Callable[..., Any],
                                                               signals: SignalRecorder) -> None:
    url = await desktop_proxy()
    loop = asyncio.get_running_loop()
    end = loop.time() + 1.5
    while loop.time() < end:
        for target in ("npu", "nvidia"):
            assert (await chat(url, headers={"X-Target-Backend": target}))["X-Backend-Used"] == target
    await asyncio.sleep(1.1)  # one more tick, to announce where the last request went
    announced = [(at, body[1]["LastBackend"].value) for at, body in
                 signals.timed("PropertiesChanged", f"{PROXY}.Routing")]
    assert 1 <= len(announced) <= 4, announced
    assert all(later - earlier >= 0.9 for (earlier, _), (later, _) in itertools.pairwise(announced))
    assert announced[-1][1] == "nvidia"
