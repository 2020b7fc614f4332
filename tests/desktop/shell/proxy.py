"""The real proxy (`python -m ollama_proxy serve`, D-Bus front on) in front of one simulator, both in their own
processes on the test's private session bus, as a desktop user would run them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from .session import Processes, ShellBus

BUS_NAME = "ie.fio.OllamaProxy"
TIMEOUT = aiohttp.ClientTimeout(total=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_proxy(processes: Processes, env: dict[str, str], root: Path) -> tuple[str, Any]:
    """The proxy's URL and its process; it still has to come up (`wait_for_proxy`)."""
    sim_port, proxy_port = free_port(), free_port()
    processes.start([sys.executable, "-m", "ollama_proxy.sim", "--port", str(sim_port), "--profile", "npu",
                     "--time-scale", "0"], env, "sim.log")
    config = root / "proxy.yaml"
    config.write_text(yaml.safe_dump({
        "backends": [{"id": "npu", "hardware": "npu", "endpoint": f"http://127.0.0.1:{sim_port}"}],
        # No nvidia-smi here, and none wanted: the host's GPU must not steer auto mode in a test.
        "system": {"nvidia_smi": "/nonexistent/nvidia-smi"},
        "desktop": {"dbus": "on"},
    }))
    process = processes.start([sys.executable, "-m", "ollama_proxy", "serve", "--config", str(config),
                               "--proxy-port", str(proxy_port)], env, "proxy.log")
    return f"http://127.0.0.1:{proxy_port}", process


async def wait_for_proxy(url: str, process: Any, bus: ShellBus, log: Path, timeout_s: float = 15) -> str | None:
    """Once the proxy answers HTTP: None when it owns its bus name too, else why not. A proxy that does not come up
    at all fails the test (with its log's last lines)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        while True:
            assert process.poll() is None, f"the proxy exited with {process.returncode}: {_tail(log)}"
            assert asyncio.get_running_loop().time() < deadline, f"the proxy did not answer: {_tail(log)}"
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + "/health") as response:
                    if response.status in (200, 503):
                        break
            await asyncio.sleep(0.1)
    while not await bus.has_owner(BUS_NAME):
        if asyncio.get_running_loop().time() > deadline:
            return f"no {BUS_NAME} on the session bus after {timeout_s:.0f} s: {_tail(log)}"
        await asyncio.sleep(0.1)
    return None


async def efficiency(url: str) -> dict[str, Any]:
    """The proxy's own state of the mode (GET /efficiency), not what the bus or the shell says."""
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(url + "/efficiency") as response:
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


async def post(url: str, path: str, body: dict[str, Any]) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.post(url + path, json=body) as response:
        assert response.status == 200, await response.text()


def _tail(log: Path, lines: int = 5) -> str:
    return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:]) if log.exists() else ""
