"""A real OpenAI-type backend: `llama_cpp.server` serving the tiny generated GGUF model.

Skipped, with the reason, when llama-cpp-python[server] is not installed. The server flags are
the stable ones from /work/shared/reference/real-backend.md: one thread (two spin against the
server's own thread on a 2-core machine) and `--interrupt_requests false`, so that a request
never cuts off another one's stream.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollama_proxy.testing.tiny_gguf import write_tiny_gguf

MODEL_ALIAS = "tiny"
N_CTX = 2048
STARTUP_TIMEOUT_S = 60.0


def _llama_cpp_server_missing() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install 'llama-cpp-python[server]')"
    for module in ("fastapi", "uvicorn", "sse_starlette", "pydantic_settings"):
        if importlib.util.find_spec(module) is None:
            return f"llama-cpp-python is installed without its [server] extra ({module} missing)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("model") / "tiny.gguf")


@pytest.fixture(scope="session")
def llama_server(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (no trailing slash) of a running llama.cpp server; stopped after the session."""
    missing = _llama_cpp_server_missing()
    if missing:
        pytest.skip(missing)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(tiny_gguf),
               "--model_alias", MODEL_ALIAS, "--n_ctx", str(N_CTX), "--n_threads", "1",
               "--n_threads_batch", "1", "--embedding", "true", "--interrupt_requests", "false",
               "--verbose", "false", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while not _answers(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    pytest.fail(f"llama_cpp.server did not start (exit {process.poll()}):\n{tail}")
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
