"""The real proxy (`python -m ollama_proxy serve`, a subprocess in front of the simulator) as its user unit
runs it: speaking sd_notify to a datagram socket the test binds and names in NOTIFY_SOCKET, as systemd does
for a `Type=notify` unit, and staying inside the unit's system call and address family filters.

The simulator runs in the test's event loop, so the socket is read with the loop's `sock_recv`, never a
blocking call that would stall the backend the proxy is starting against. No systemd manager runs here:
the filters are checked by tracing the proxy (strace) and comparing with the sets systemd-analyze expands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ollama_proxy.adapters.systemd.unit import render_unit
from ollama_proxy.sim import SimServer

MESSAGE_TIMEOUT_S = 30.0
CREDENTIALS = struct.Struct("iII")  # struct ucred: pid, uid, gid


class Manager:
    """The service manager's end: each notification (one datagram) as `{field: value}`, and the process that
    sent it, from the credentials the kernel attaches (systemd accepts only the main process's, by default)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sender = 0

    async def next(self) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        received: asyncio.Future[tuple[bytes, list[tuple[int, int, bytes]], int, Any]] = loop.create_future()

        def receive() -> None:
            if not received.done():
                received.set_result(self._sock.recvmsg(4096, socket.CMSG_SPACE(CREDENTIALS.size)))

        loop.add_reader(self._sock.fileno(), receive)
        try:
            data, ancillary, _, _ = await asyncio.wait_for(received, MESSAGE_TIMEOUT_S)
        finally:
            loop.remove_reader(self._sock.fileno())
        self.sender = next(CREDENTIALS.unpack(value)[0] for level, kind, value in ancillary
                           if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS))
        return dict(line.split("=", 1) for line in data.decode().splitlines())


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[Manager, str]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        path = tmp_path / "notify"
        sock.bind(str(path))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.setblocking(False)
        yield Manager(sock), str(path)


class Proxy:
    """`python -m ollama_proxy serve` with a config file in front of `sim`; stderr kept in a file."""

    def __init__(self, tmp_path: Path, sim: SimServer) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.config = tmp_path / "proxy.yaml"
        self.config.write_text(json.dumps({"server": {"http_port": self.port, "shutdown_grace_s": 1},
                                           "backends": [{"id": "sim", "endpoint": sim.url}]}))
        self._stderr_path = tmp_path / "proxy.stderr"
        self._stderr = self._stderr_path.open("wb")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *wrapper: str, **env: str) -> None:
        clean = {k: v for k, v in os.environ.items() if k not in ("OLLAMA_PROXY_CONFIG", "OLLAMA_BASE_URL")}
        self.process = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "ollama_proxy", "serve", "--config", str(self.config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr, env={**clean, **env})

    def send(self, sig: signal.Signals, pid: int | None = None) -> None:
        """`sig` to the proxy, or to `pid` when a wrapper (strace) runs it."""
        assert self.process is not None
        os.kill(pid or self.process.pid, sig)

    async def exit_status(self) -> int:
        assert self.process is not None
        return await asyncio.to_thread(self.process.wait, 30)

    async def wait_serving(self) -> None:
        deadline = time.monotonic() + MESSAGE_TIMEOUT_S
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.url}/health") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise AssertionError(f"the proxy did not serve:\n{self.stderr()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        self._stderr.flush()
        return self._stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        self._stderr.close()


@pytest.fixture
def proxy(tmp_path: Path, sim: SimServer) -> Iterator[Proxy]:
    started = Proxy(tmp_path, sim)
    yield started
    started.stop()


async def test_ready_after_listening_reloading_on_sighup_stopping_on_sigterm(
        proxy: Proxy, manager: tuple[Manager, str]) -> None:
    notifications, address = manager
    proxy.start(NOTIFY_SOCKET=address)
    ready = await notifications.next()
    # Told ready, the proxy answers at once: readiness is not sent before the port is served.
    async with aiohttp.ClientSession() as session, session.get(f"{proxy.url}/health") as r:
        assert r.status == 200
    assert ready == {"READY": "1", "STATUS": f"serving on {proxy.url}"}
    assert proxy.process is not None and notifications.sender == proxy.process.pid  # NotifyAccess=main

    proxy.send(signal.SIGHUP)
    reloading = await notifications.next()
    assert reloading["RELOADING"] == "1"
    sent_at_us = int(reloading["MONOTONIC_USEC"])
    assert 0 <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000 - sent_at_us < 10_000_000
    assert (await notifications.next())["READY"] == "1"

    async with aiohttp.ClientSession() as session, session.post(f"{proxy.url}/admin/reload") as r:
        assert r.status == 200, await r.text()  # the same reload asked over HTTP: the manager hears of it too
    assert (await notifications.next())["RELOADING"] == "1"
    assert (await notifications.next())["READY"] == "1"

    proxy.config.write_text("server: [not, a, mapping]")  # a reload that fails is over too: ready again
    proxy.send(signal.SIGHUP)
    assert (await notifications.next())["RELOADING"] == "1"
    assert (await notifications.next())["READY"] == "1"

    proxy.send(signal.SIGTERM)
    assert (await notifications.next())["STOPPING"] == "1"
    assert await proxy.exit_status() == 0
    log = proxy.stderr()
    assert "configuration not reloaded, the running one stays" in log
    assert "Traceback" not in log and "could not notify" not in log


@pytest.mark.skipif(not (shutil.which("strace") and shutil.which("systemd-analyze")),
                    reason="needs strace and systemd-analyze")
async def test_serving_reloading_and_stopping_stay_inside_the_units_filters(
        tmp_path: Path, proxy: Proxy, manager: tuple[Manager, str]) -> None:
    """A call outside SystemCallFilter= fails with EPERM under systemd, a family outside
    RestrictAddressFamilies= with EAFNOSUPPORT: either would break the service only when installed."""
    unit = dict(line.split("=", 1) for line in render_unit(["/bin/true"]).splitlines() if "=" in line)
    trace = tmp_path / "strace"
    notifications, address = manager
    proxy.start("strace", "--follow-forks", "--quiet=all", f"--output={trace}", NOTIFY_SOCKET=address)
    await proxy.wait_serving()
    async with aiohttp.ClientSession() as session:
        chat = {"model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}]}
        async with session.post(f"{proxy.url}/api/chat", json=chat) as r:
            assert r.status == 200
            await r.read()
        async with session.post(f"{proxy.url}/v1/chat/completions", json={**chat, "stream": True}) as r:
            assert r.status == 200
            await r.read()
    assert (await notifications.next())["READY"] == "1"  # sent at start-up, by the traced proxy
    proxy.send(signal.SIGHUP, notifications.sender)
    assert (await notifications.next())["RELOADING"] == "1"
    assert (await notifications.next())["READY"] == "1"
    proxy.send(signal.SIGTERM, notifications.sender)
    assert (await notifications.next())["STOPPING"] == "1"
    assert await proxy.exit_status() == 0

    traced = trace.read_text()
    called = set(re.findall(r"^\d+ +([a-z0-9_]+)\(", traced, re.MULTILINE))
    assert {"socket", "bind", "accept4", "sendto"} <= called  # the trace saw the serving
    assert called - syscall_set(unit["SystemCallFilter"]) == set()
    families = set(re.findall(r"socket\((AF_[A-Z0-9]+)", traced))
    assert families and families <= set(unit["RestrictAddressFamilies"].split())


def syscall_set(filter_value: str) -> set[str]:
    """The system calls a SystemCallFilter= allow list names, its @groups expanded by systemd-analyze."""
    names: set[str] = set()
    pending, seen = filter_value.split(), set()
    while pending:
        item = pending.pop()
        if not item.startswith("@"):
            names.add(item)
        elif item not in seen:
            seen.add(item)
            listed = subprocess.run(["systemd-analyze", "syscall-filter", item], capture_output=True, text=True,
                                    timeout=30, check=True).stdout.splitlines()[1:]
            pending += [line.strip() for line in listed if line.strip() and not line.strip().startswith("#")]
    return names
