"""`ollama-proxy status` as a user runs it (the real command, a subprocess) against the real proxy in front of
simulators; and the container's commands against live processes: the image's HEALTHCHECK, `demo --host`.

The proxy and simulators run in the test's event loop; the command runs with asyncio's subprocess support so
the loop keeps serving while it waits. A pseudo-terminal stands in for a user's terminal where colour matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import re
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ollama_proxy.sim import SimServer

ROOT = Path(__file__).parents[2]
TIMEOUT = aiohttp.ClientTimeout(total=30)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Done:
    code: int
    out: str
    err: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without the proxy's own variables (a developer's shell may set them)."""
    drop = ("OLLAMA_PROXY_URL", "OLLAMA_PROXY_CONFIG", "OLLAMA_PROXY_API_KEY", "OLLAMA_BASE_URL", "NO_COLOR")
    return {k: v for k, v in os.environ.items() if k not in drop} | {"TERM": "xterm"} | extra


async def run_command(*argv: str, env: dict[str, str] | None = None, tty: bool = False) -> Done:
    """Run `python -m ollama_proxy ARGV`; with `tty`, its stdout is a pseudo-terminal."""
    if not tty:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ollama_proxy", *argv, env=env or clean_env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return Done(process.returncode, out.decode(), err.decode())
    leader, follower = pty.openpty()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ollama_proxy", *argv, env=env or clean_env(),
            stdout=follower, stderr=asyncio.subprocess.PIPE)
        os.close(follower)
        _, err = await asyncio.wait_for(process.communicate(), 60)
        out = b""
        with contextlib.suppress(OSError):  # EIO once the terminal's other side is closed and drained
            while chunk := os.read(leader, 65536):
                out += chunk
    finally:
        os.close(leader)
    assert process.returncode is not None
    return Done(process.returncode, out.decode().replace("\r\n", "\n"), err.decode())


async def post(url: str, body: dict[str, Any], **headers: str) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.post(url, json=body, headers=headers) as r:
        assert r.status in (200, 404), await r.text()
        await r.read()


@pytest.fixture
async def busy_proxy(sim_factory: Callable[..., Any], proxy_factory: Callable[..., Any]) -> str:
    """Two backends behind the proxy and three requests made: one sized, one passthrough, one unknown model."""
    gpu = await sim_factory(profile="nvidia", models=["llama3.2", "qwen3:4b"])
    cpu = await sim_factory(profile="cpu", models=["llama3.2"])
    url: str = await proxy_factory({"backends": [
        {"id": "gpu", "hardware": "nvidia", "endpoint": gpu.url,
         "characteristics": {"power_watts": 55, "avg_latency_ms": 100, "max_concurrent": 8}},
        {"id": "cpu", "hardware": "cpu", "endpoint": cpu.url,
         "characteristics": {"power_watts": 28, "avg_latency_ms": 1500, "max_concurrent": 2}},
    ], "router": {"default_mode": "performance"}})
    await post(f"{url}/proxy-context/auto/api/chat",
               {"model": "qwen3:4b", "messages": [{"role": "user", "content": "Hi"}], "stream": False})
    await post(f"{url}/api/generate", {"model": "llama3.2", "prompt": "Hi", "stream": False})
    await post(f"{url}/api/generate", {"model": "no-such-model", "prompt": "Hi", "stream": False})
    return url


async def test_table_shows_backends_models_mode_and_decisions(busy_proxy: str) -> None:
    done = await run_command("status", "--url", busy_proxy)
    assert done.code == 0, done.err
    assert done.err == "" and "\x1b[" not in done.out  # a pipe gets no colour
    lines = done.out.splitlines()
    assert lines[0].startswith("ollama-proxy ") and lines[0].endswith(f" at {busy_proxy}: ok")
    assert lines[1].startswith("mode     performance")
    backends = lines[lines.index("BACKENDS") + 1:]
    assert backends[1].split()[:4] == ["gpu", "up", "closed", "0/8"] and "55 W" in backends[1]
    assert backends[2].split()[:4] == ["cpu", "up", "closed", "0/2"]
    models = lines[lines.index("MODELS") + 1:]
    assert any(line.split()[:3] == ["gpu", "qwen3:4b", "2048"] for line in models)
    recent = lines[lines.index("RECENT DECISIONS (newest first)") + 2:]
    assert " generate no-such-model " in recent[0] and " 404 " in recent[0]
    assert " generate llama3.2 " in recent[1] and " 200 " in recent[1]
    assert re.search(r" chat qwen3:4b +gpu +2048 fits-bucket +200 ", recent[2]), recent[2]
    assert recent[2].endswith("1 excluded")  # the routing reason: cpu has no qwen3:4b


async def test_json_is_the_status_document(busy_proxy: str) -> None:
    done = await run_command("status", "--url", busy_proxy, "--json")
    assert done.code == 0, done.err
    doc = json.loads(done.out)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(f"{busy_proxy}/status") as r:
        live = await r.json()
    assert [b["id"] for b in doc["backends"]] == [b["id"] for b in live["backends"]] == ["gpu", "cpu"]
    assert doc["efficiency"]["effective_mode"] == "performance"
    assert [d["model"] for d in doc["recent"]] == ["no-such-model", "llama3.2", "qwen3:4b"]


async def test_colour_on_a_terminal_and_never_with_no_color(busy_proxy: str) -> None:
    coloured = await run_command("status", "--url", busy_proxy, tty=True)
    assert coloured.code == 0, coloured.err
    assert "\x1b[32mok\x1b[0m" in coloured.out and "\x1b[32mup\x1b[0m" in coloured.out
    assert "\x1b[33m404\x1b[0m" in coloured.out
    plain = await run_command("status", "--url", busy_proxy, tty=True, env=clean_env(NO_COLOR="1"))
    assert plain.code == 0 and "\x1b[" not in plain.out
    assert ANSI.sub("", coloured.out).splitlines()[:12] == plain.out.splitlines()[:12]


async def test_default_url_from_the_environment_and_the_config_file(busy_proxy: str, tmp_path: Path) -> None:
    from_env = await run_command("status", env=clean_env(OLLAMA_PROXY_URL=busy_proxy))
    assert from_env.code == 0 and from_env.out.splitlines()[0].endswith(f"at {busy_proxy}: ok")
    port = busy_proxy.rsplit(":", 1)[1]
    config = tmp_path / "proxy.yaml"
    config.write_text(f"server: {{host: 0.0.0.0, http_port: {port}}}\n")
    from_file = await run_command("status", "--config", str(config))
    assert from_file.code == 0, from_file.err
    assert from_file.out.splitlines()[0].endswith(f"at http://127.0.0.1:{port}: ok")


async def test_no_proxy_running_is_one_line_and_exit_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for argv in (["status", "--url", url], ["status", "--url", url, "--json"]):
        done = await run_command(*argv)
        assert done.code == 1 and done.out == ""
        assert done.err == f"ollama-proxy status: no proxy is running at {url} (connection refused); " \
                           "start one with `ollama-proxy`, or pass --url\n"


async def test_ollama_itself_is_not_mistaken_for_the_proxy(sim: SimServer) -> None:
    done = await run_command("status", "--url", sim.url)
    assert done.code == 1 and done.out == ""
    assert done.err.count("\n") == 1 and "is it an ollama-proxy" in done.err


async def test_api_key_from_the_flag_or_the_environment(sim: SimServer,
                                                        proxy_factory: Callable[..., Any]) -> None:
    url = await proxy_factory({"backends": [{"id": "sim", "endpoint": sim.url}], "server": {"api_keys": ["k1"]}})
    without = await run_command("status", "--url", url)
    assert without.code == 1
    assert without.err == f"ollama-proxy status: {url} wants an API key: pass --key or set OLLAMA_PROXY_API_KEY\n"
    wrong = await run_command("status", "--url", url, "--key", "nope")
    assert wrong.code == 1 and wrong.err == f"ollama-proxy status: {url} refused the API key\n"
    assert (await run_command("status", "--url", url, "--key", "k1")).code == 0
    assert (await run_command("status", "--url", url, env=clean_env(OLLAMA_PROXY_API_KEY="k1"))).code == 0


def dockerfile_healthcheck() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("HEALTHCHECK"))
    command = json.loads(line[line.index("CMD") + 3:])
    assert isinstance(command, list)
    return [sys.executable if command[0] == "python" else command[0], *command[1:]]


async def run_healthcheck(url: str) -> int:
    process = await asyncio.create_subprocess_exec(*dockerfile_healthcheck(), env=clean_env(OLLAMA_PROXY_URL=url),
                                                   stdout=asyncio.subprocess.DEVNULL,
                                                   stderr=asyncio.subprocess.DEVNULL)
    return await asyncio.wait_for(process.wait(), 30)


async def test_the_images_healthcheck_passes_on_a_live_proxy_and_fails_without_one(proxy: str) -> None:
    assert await run_healthcheck(proxy) == 0
    assert await run_healthcheck(f"http://127.0.0.1:{free_port()}") != 0


async def test_demo_listens_where_host_says_with_json_logs() -> None:
    """127.0.0.2 (loopback, but not 127.0.0.1) proves the address is the flag's; 0.0.0.0 works the same way."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollama_proxy", "demo", "--host", "127.0.0.2", "--proxy-port", str(port),
        "--time-scale", "0", "--log-format", "json", env=clean_env(PYTHONUNBUFFERED="1"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    try:
        banner = await asyncio.wait_for(process.stdout.readuntil(b"Try:"), 30)
        assert f"running at http://127.0.0.2:{port}  (listening on 127.0.0.2;".encode() in banner
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(f"http://127.0.0.2:{port}/health") as r:
            assert r.status == 200
            assert len((await r.json())["backends"]) == 4
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(f"http://127.0.0.1:{port}/health"):
                pass
        status = await run_command("status", "--url", f"http://127.0.0.2:{port}")
        assert status.code == 0 and all(f"\n{b} " in status.out for b in ("npu", "igpu", "nvidia", "cpu"))
    finally:
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    log_lines = err.decode().splitlines()
    assert log_lines and all(json.loads(line)["level"] for line in log_lines)
