"""Starting and stopping the real command: `python -m ollama_proxy` as a subprocess.

The simulator runs in the test's event loop (`sim_factory`) with a time scale that makes a stream
last about a second or, for the cut-off case, much longer than the grace period. The proxy's
stderr goes to a file that the assertions read once the process has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ollama_proxy.sim import SimServer

READY_TIMEOUT_S = 30.0
TIMEOUT = aiohttp.ClientTimeout(total=60)
STOP_SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]
# Text that must never be in the proxy's stderr, whatever happened.
NEVER_LOGGED = ("Traceback", "Unclosed client session", "Unclosed connector", "Task was destroyed",
                "Task exception was never retrieved")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OLLAMA_PROXY_CONFIG", "OLLAMA_BASE_URL", "OLLAMA_HOST")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class ProxyProcess:
    process: subprocess.Popen[bytes]
    port: int
    stderr_path: Path
    exited_at: float | None = None
    _log: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def wait_exit(self, timeout_s: float) -> int | None:
        """The exit status, or None if it is still running after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self.exited_at = self.exited_at or time.monotonic()
                return code
            await asyncio.sleep(0.02)
        return self.process.poll()

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"the proxy exited with {self.process.returncode} before it served:\n"
                                         f"{self.stderr()}")
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(self.url + "/health") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise AssertionError(f"the proxy did not answer /health in {READY_TIMEOUT_S} s:\n{self.stderr()}")


@pytest.fixture
def spawn_proxy(tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    """`spawn_proxy(*args)` runs `python -m ollama_proxy *args`; each is killed at the end if still running."""
    started: list[ProxyProcess] = []

    def spawn(*args: str, port: int) -> ProxyProcess:
        stderr_path = tmp_path / f"proxy-{len(started)}.stderr"
        log = stderr_path.open("wb")
        process = subprocess.Popen([sys.executable, "-m", "ollama_proxy", *args], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=log, env=child_env())
        started.append(ProxyProcess(process, port, stderr_path, _log=log))
        return started[-1]

    yield spawn
    for proxy in started:
        if proxy.process.poll() is None:
            proxy.process.kill()
        proxy.process.wait(timeout=30)
        proxy._log.close()


def write_config(tmp_path: Path, sim: SimServer, port: int, **server: Any) -> Path:
    path = tmp_path / "proxy.yaml"
    # JSON is YAML: no quoting surprises.
    path.write_text(json.dumps({"server": {"http_port": port, **server}, "log_level": "INFO",
                                "backends": [{"id": "sim", "endpoint": sim.url}]}))
    return path


def assert_clean(stderr: str) -> None:
    for text in NEVER_LOGGED:
        assert text not in stderr, f"{text!r} in the proxy's stderr:\n{stderr}"


def _messages(stderr: str) -> list[str]:
    """Log messages without their `time LEVEL logger:` prefix (timestamps are full of digits)."""
    out = []
    for line in stderr.splitlines():
        match = re.match(r"^\S+ \S+ [A-Z]+ [\w.]+: (.*)$", line)
        out.append(match.group(1) if match else line)
    return out


def count_logged(stderr: str, word: str) -> list[int]:
    """Numbers the log puts next to `word`, before or after it ("2 request(s) drained", "cut: 1")."""
    found = []
    for message in _messages(stderr):
        for match in re.finditer(rf"\b{word}\w*", message, re.IGNORECASE):
            before = re.search(r"(\d+)\D{0,24}$", message[:match.start()])
            after = re.match(r"\D{0,24}?(\d+)", message[match.end():])
            found += [int(m.group(1)) for m in (before, after) if m]
    return found


@dataclass
class Stream:
    lines: list[dict[str, Any]] = field(default_factory=list)
    first: asyncio.Event = field(default_factory=asyncio.Event)
    broke: str | None = None  # how the connection ended, if it did not end cleanly
    lines_after_signal: int = 0
    signalled: bool = False

    @property
    def done(self) -> bool:
        return bool(self.lines) and self.lines[-1].get("done") is True

    @property
    def error_line(self) -> bool:
        return bool(self.lines) and "error" in self.lines[-1]


async def stream_generate(url: str, stream: Stream, session: aiohttp.ClientSession) -> None:
    body = {"model": "llama3.2", "prompt": "Tell me a long story", "stream": True}
    try:
        async with session.post(url + "/api/generate", json=body) as r:
            assert r.status == 200, await r.text()
            async for raw in r.content:
                if raw.strip():
                    stream.lines.append(json.loads(raw))
                    stream.lines_after_signal += stream.signalled
                    stream.first.set()
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        stream.broke = f"{type(exc).__name__}: {exc}"
    finally:
        stream.first.set()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        yield session


# --- (a) the port is taken -------------------------------------------------------------------------


@pytest.mark.parametrize("log_level", [None, "WARNING"], ids=["default-log-level", "warning-log-level"])
async def test_port_in_use_is_one_line_and_exit_1(log_level: str | None, sim: SimServer,
                                                  spawn_proxy: Callable[..., ProxyProcess]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        level = ["--log-level", log_level] if log_level else []
        proxy = spawn_proxy("--proxy-port", str(port), "--ollama-port", str(sim.port), *level, port=port)
        code = await proxy.wait_exit(READY_TIMEOUT_S)
    stderr = proxy.stderr()
    assert code == 1, f"exit status {code}, expected 1; stderr:\n{stderr}"
    assert_clean(stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"stderr should be one line, got {len(lines)}:\n{stderr}"
    assert f"127.0.0.1:{port}" in lines[0], lines[0]


# --- (b), (d) a stop signal while streams run: they finish ----------------------------------------


@pytest.mark.parametrize("stop", STOP_SIGNALS)
async def test_stop_signal_drains_streams_in_flight(stop: signal.Signals, sim_factory: Callable[..., Any],
                                                    spawn_proxy: Callable[..., ProxyProcess],
                                                    client: aiohttp.ClientSession) -> None:
    # About 1.5 s of tokens after the first one: the signal lands mid-stream.
    sim = await sim_factory(models=["llama3.2"], time_scale=0.5, reply_tokens=(24, 24), num_parallel=2)
    port = free_port()
    proxy = spawn_proxy("--proxy-port", str(port), "--ollama-port", str(sim.port), port=port)
    await proxy.wait_ready()
    streams = [Stream(), Stream()]
    tasks = [asyncio.create_task(stream_generate(proxy.url, s, client)) for s in streams]
    try:
        await asyncio.wait_for(asyncio.gather(*(s.first.wait() for s in streams)), 30)
        assert not any(s.done for s in streams), "a stream finished before the signal: make it longer"
        proxy.process.send_signal(stop)
        signalled_at = time.monotonic()
        for s in streams:
            s.signalled = True
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    code = await proxy.wait_exit(15)
    stderr = proxy.stderr()
    for s in streams:
        assert s.broke is None, f"the stream broke off: {s.broke}\n{stderr}"
        assert s.done, f"no final done line; last lines {s.lines[-2:]}\n{stderr}"
        assert s.lines_after_signal > 0, "nothing arrived after the signal: the stream was not in flight"
        assert not any("error" in line for line in s.lines), s.lines
    assert code == 0, f"exit status {code}, expected 0 (None: still running); stderr:\n{stderr}"
    assert proxy.exited_at is not None and proxy.exited_at - signalled_at < 10, \
        "the proxy kept running long after its streams had drained"
    assert_clean(stderr)
    assert 2 in count_logged(stderr, "drain"), f"the log should say 2 requests were drained:\n{stderr}"


async def test_stop_signal_with_nothing_in_flight_exits_at_once(sim: SimServer,
                                                                spawn_proxy: Callable[..., ProxyProcess]) -> None:
    port = free_port()
    proxy = spawn_proxy("--proxy-port", str(port), "--ollama-port", str(sim.port), port=port)
    await proxy.wait_ready()
    proxy.process.send_signal(signal.SIGTERM)
    signalled_at = time.monotonic()
    code = await proxy.wait_exit(15)
    stderr = proxy.stderr()
    assert code == 0, f"exit status {code}; stderr:\n{stderr}"
    assert proxy.exited_at is not None and proxy.exited_at - signalled_at < 5, "idle, it waited out the grace period"
    assert_clean(stderr)


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_the_access_line_on_stderr(log_format: str, sim: SimServer, tmp_path: Path,
                                         spawn_proxy: Callable[..., ProxyProcess]) -> None:
    """As a user sees it: the process's own log set-up, where access lines skip the LogRecord (`logs.InfoLines`)."""
    port = free_port()
    proxy = spawn_proxy("--config", str(write_config(tmp_path, sim, port, log_format=log_format)), port=port)
    await proxy.wait_ready()
    async with aiohttp.ClientSession() as session, session.post(
            proxy.url + "/proxy-context/auto/api/generate",
            json={"model": "llama3.2", "prompt": "hi", "stream": False}) as r:
        assert r.status == 200
        request_id, size = r.headers["X-Request-ID"], int(r.headers["X-Proxy-Context-Size"])
    proxy.process.send_signal(signal.SIGTERM)
    assert await proxy.wait_exit(15) == 0
    stderr = proxy.stderr()
    [line] = [line for line in stderr.splitlines() if request_id in line]
    message = (f"{request_id} POST /proxy-context/auto/api/generate model=llama3.2 backend=sim "
               f"num_ctx={size} (fits-bucket) status=200 ")
    if log_format == "json":
        entry = json.loads(line)
        assert entry["message"].startswith(message) and entry["message"].endswith("ms")
        assert (entry["level"], entry["logger"], entry["request_id"], entry["num_ctx"], entry["backend"]) == (
            "INFO", "ollama_proxy.access", request_id, size, "sim")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    else:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO ollama_proxy.access: "
                            + re.escape(message) + r"\d+\.\dms", line), line
    assert_clean(stderr)


# --- (c), (d) a stream longer than the grace period is cut -----------------------------------------


@pytest.mark.parametrize("stop", STOP_SIGNALS)
async def test_stream_longer_than_the_grace_period_is_cut(stop: signal.Signals, sim_factory: Callable[..., Any],
                                                          spawn_proxy: Callable[..., ProxyProcess],
                                                          client: aiohttp.ClientSession, tmp_path: Path) -> None:
    grace_s = 1.0
    # About 12 s of tokens: far longer than the grace period.
    sim = await sim_factory(models=["llama3.2"], time_scale=0.5, reply_tokens=(200, 200))
    port = free_port()
    proxy = spawn_proxy("--config", str(write_config(tmp_path, sim, port, shutdown_grace_s=grace_s)), port=port)
    await proxy.wait_ready()
    stream = Stream()
    task = asyncio.create_task(stream_generate(proxy.url, stream, client))
    try:
        await asyncio.wait_for(stream.first.wait(), 30)
        proxy.process.send_signal(stop)
        signalled_at = time.monotonic()
        stream.signalled = True
        code = await proxy.wait_exit(grace_s + 10)
        await asyncio.wait_for(task, 15)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    stderr = proxy.stderr()
    assert code == 0, f"exit status {code}, expected 0 (None: still running); stderr:\n{stderr}"
    assert proxy.exited_at is not None
    took = proxy.exited_at - signalled_at
    assert grace_s * 0.8 <= took <= grace_s + 4, f"exited {took:.2f} s after the signal; grace is {grace_s} s"
    assert not stream.done, "the stream finished: it should have been cut"
    assert stream.error_line or stream.broke, f"the stream just stopped: last lines {stream.lines[-2:]}"
    assert_clean(stderr)
    assert 1 in count_logged(stderr, "cut"), f"the log should say 1 request was cut:\n{stderr}"


def test_count_logged_reads_the_usual_phrasings() -> None:
    stderr = ("2026-12-01 22:52:16,663 INFO ollama_proxy: shutting down: waiting up to 30 s for 2 request(s)\n"
              "2026-12-01 22:52:17,100 INFO ollama_proxy: shut down: 2 request(s) drained, 0 cut\n")
    assert 2 in count_logged(stderr, "drain")
    assert count_logged(stderr, "cut") == [0]
    assert 1 in count_logged("drained: 3; cut: 1", "cut")
    assert count_logged("2026-12-01 22:52:16,001 INFO ollama_proxy: listening", "cut") == []
