"""A throw-away GNOME Shell 43 session for the real-shell test.

The shell needs a system bus (it dies in LoginManagerSystemd without one; the container has no systemd), a session
bus (from `dbus-run-session`, which also activates dconf for gsettings) and a HOME of its own. Everything here is
started with `Processes`, which stops what it started, in reverse order, whatever the test's outcome.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

HERE = Path(__file__).parent
HELPER_UUID = "unsafe-mode@tests.ollama-proxy.fio.ie"
SHELL = ("org.gnome.Shell", "/org/gnome/Shell")

# Allows everything and activates nothing: only the shell and its own helpers talk on it.
SYSTEM_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

# The Extensions app makes the shell ask extensions.gnome.org for updates at start; hiding it keeps the test offline.
HIDDEN_EXTENSIONS_APP = "[Desktop Entry]\nType=Application\nName=Extensions\nHidden=true\n"


class Processes:
    """Child processes with their logs, stopped (TERM, then KILL) in reverse order of start on leaving `with`."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self._started: list[tuple[subprocess.Popen[bytes], IO[bytes] | None]] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_all()

    def start(self, argv: Sequence[str], env: dict[str, str], log_name: str | None = None, *,
              stdin: int | None = subprocess.DEVNULL, stdout: int | None = None) -> subprocess.Popen[bytes]:
        log = (self.logs / log_name).open("wb") if log_name else None
        process = subprocess.Popen(argv, env=env, stdin=stdin, stdout=stdout if stdout is not None else log,
                                   stderr=log or subprocess.DEVNULL, start_new_session=True)
        self._started.append((process, log))
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.stdin:
            process.stdin.close()
        if process.poll() is None:
            # The whole group: dbus-run-session's daemon and the services it activated go with it.
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process.stdout:
            process.stdout.close()

    def stop_all(self) -> None:
        while self._started:
            process, log = self._started.pop()
            self.stop(process)
            if log:
                log.close()


def throwaway_env(root: Path) -> dict[str, str]:
    """The environment of every child: a fresh HOME and XDG dirs under `root`, no display of the host's."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DBUS_", "XDG_", "WAYLAND_", "GNOME_", "DISPLAY"))}
    home = root / "home"
    dirs = {"HOME": home, "XDG_CONFIG_HOME": home / ".config", "XDG_DATA_HOME": home / ".local/share",
            "XDG_CACHE_HOME": home / ".cache", "XDG_STATE_HOME": home / ".local/state", "XDG_RUNTIME_DIR": root / "run"}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    dirs["XDG_RUNTIME_DIR"].chmod(0o700)
    applications = dirs["XDG_DATA_HOME"] / "applications"
    applications.mkdir()
    (applications / "org.gnome.Extensions.desktop").write_text(HIDDEN_EXTENSIONS_APP)
    env.update({name: str(path) for name, path in dirs.items()})
    return env


def start_system_bus(processes: Processes, env: dict[str, str], root: Path) -> dict[str, str]:
    """`env` with the address of a private system bus."""
    config = root / "system-bus.conf"
    config.write_text(SYSTEM_BUS_CONFIG.format(socket=root / "system_bus_socket"))
    bus = processes.start(["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address"], env,
                          "system-bus.log", stdout=subprocess.PIPE)
    assert bus.stdout
    return {**env, "DBUS_SYSTEM_BUS_ADDRESS": bus.stdout.readline().decode().strip()}


def start_session_bus(processes: Processes, env: dict[str, str]) -> dict[str, str]:
    """`env` with the address of a `dbus-run-session` session bus."""
    # dbus-run-session lives as long as its child; `cat` lives until stdin closes, which `Processes.stop` does.
    bus = processes.start(["dbus-run-session", "--", "sh", "-c", 'echo "$DBUS_SESSION_BUS_ADDRESS"; exec cat'],
                          env, "session-bus.log", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert bus.stdout
    return {**env, "DBUS_SESSION_BUS_ADDRESS": bus.stdout.readline().decode().strip()}


def install_helper_extension(env: dict[str, str]) -> None:
    """The test-only extension that puts the shell in unsafe mode (see its extension.js)."""
    target = Path(env["XDG_DATA_HOME"]) / "gnome-shell/extensions" / HELPER_UUID
    target.mkdir(parents=True)
    for source in (HERE / HELPER_UUID).iterdir():
        (target / source.name).write_bytes(source.read_bytes())


def gsettings(env: dict[str, str], schema: str, key: str, value: Any) -> None:
    text = value if isinstance(value, str) else json.dumps(value)  # JSON lists and strings are GVariant text too
    subprocess.run(["gsettings", "set", schema, key, text], env=env, check=True, timeout=20,
                   capture_output=True)


class ShellBus:
    """The test's own connection to the session bus: the shell's D-Bus API and name ownership."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus

    @classmethod
    async def connect(cls, env: dict[str, str]) -> ShellBus:
        return cls(await MessageBus(bus_address=env["DBUS_SESSION_BUS_ADDRESS"]).connect())

    async def call(self, destination: str, path: str, interface: str, member: str, signature: str = "",
                   body: Sequence[Any] = ()) -> list[Any]:
        reply = await self.bus.call(Message(destination=destination, path=path, interface=interface, member=member,
                                            signature=signature, body=list(body)))
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            raise RuntimeError(f"{interface}.{member}: {reply.error_name}: {reply.body}")
        return reply.body

    async def has_owner(self, name: str) -> bool:
        [owned] = await self.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                  "NameHasOwner", "s", [name])
        return bool(owned)

    async def wait_for_shell(self, shell: subprocess.Popen[bytes], timeout_s: float) -> list[str]:
        """The UUIDs of the extensions the shell found, once its JS answers (its bus name comes earlier, from C)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            if shell.poll() is not None:
                raise AssertionError(f"gnome-shell exited with {shell.returncode} before it was ready")
            try:
                [extensions] = await self.call(*SHELL, "org.gnome.Shell.Extensions", "ListExtensions")
                return list(extensions)
            except RuntimeError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
            await asyncio.sleep(0.1)

    async def extension_info(self, uuid: str) -> dict[str, Any]:
        [info] = await self.call(*SHELL, "org.gnome.Shell.Extensions", "GetExtensionInfo", "s", [uuid])
        return {key: value.value if isinstance(value, Variant) else value for key, value in info.items()}

    async def eval(self, code: str) -> Any:
        """`code`'s value, through JSON; Eval answers only in unsafe mode (the helper extension's doing)."""
        ok, result = await self.call(*SHELL, "org.gnome.Shell", "Eval", "s", [code])
        if not ok:
            raise AssertionError(f"Eval refused or failed ({result!r}); is {HELPER_UUID} enabled?")
        return json.loads(result) if result else None

    async def screenshot(self, path: Path) -> None:
        ok, _ = await self.call("org.gnome.Shell.Screenshot", "/org/gnome/Shell/Screenshot",
                                "org.gnome.Shell.Screenshot", "Screenshot", "bbs", [False, False, str(path)])
        assert ok and path.exists(), f"the shell did not write {path}"
