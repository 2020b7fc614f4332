"""`ollama-proxy demo`: four simulated backends (npu, igpu, nvidia, cpu) and the proxy in front,
so a newcomer can try routing and context sizing on a machine with no Ollama."""

from __future__ import annotations

import contextlib
from typing import Any

from ollama_proxy.app import bound_port, drain, start, wait_for_stop_signal
from ollama_proxy.config.load import client_url, validate
from ollama_proxy.config.schema import Config
from ollama_proxy.sim import SimConfig, SimServer

# What each simulated device serves, and how it is described to the router.
DEMO_BACKENDS: tuple[dict[str, Any], ...] = (
    {"id": "npu", "hardware": "npu", "name": "Simulated NPU", "models": ["llama3.2:1b", "nomic-embed-text"],
     "characteristics": {"power_watts": 3.0, "avg_latency_ms": 800, "priority": 3, "max_concurrent": 2}},
    {"id": "igpu", "hardware": "igpu", "name": "Simulated iGPU", "models": ["llama3.2", "nomic-embed-text"],
     "characteristics": {"power_watts": 12.0, "avg_latency_ms": 400, "priority": 2, "max_concurrent": 4}},
    {"id": "nvidia", "hardware": "nvidia", "name": "Simulated NVIDIA GPU",
     "models": ["llama3.2", "qwen3:8b", "nomic-embed-text"],
     "characteristics": {"power_watts": 55.0, "avg_latency_ms": 120, "priority": 1, "max_concurrent": 8}},
    {"id": "cpu", "hardware": "cpu", "name": "Simulated CPU", "models": ["llama3.2", "qwen3:8b"],
     "characteristics": {"power_watts": 28.0, "avg_latency_ms": 1500, "priority": 0, "max_concurrent": 2}},
)


def demo_help(url: str, listen_host: str) -> str:
    return f"""
ollama-proxy demo is running at {url}  (listening on {listen_host}; four simulated backends behind it;
Ctrl-C stops)

Try:
  curl -s {url}/health | python3 -m json.tool
  curl -s {url}/api/tags
  curl -s {url}/api/chat -d '{{"model": "llama3.2", "messages": [{{"role": "user", "content": "Hello!"}}]}}'
  curl -si {url}/proxy-context/auto/api/generate \\
       -d '{{"model": "llama3.2", "prompt": "Why is the sky blue?", "stream": false}}'
  curl -s {url}/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{{"model": "llama3.2", "messages": [{{"role": "user", "content": "Hi"}}]}}'
  ollama-proxy status --url {url}     # backends, mode and the decisions just made
  OLLAMA_HOST={url} ollama run llama3.2        # the real ollama CLI, if you have it
"""


async def run_demo(settings: Config, *, time_scale: float) -> None:
    """Serve `settings` (listen address, port, logging; its backends are replaced) in front of the
    simulators, which listen on loopback only whatever address the proxy listens on."""
    async with contextlib.AsyncExitStack() as stack:
        backends = []
        for spec in DEMO_BACKENDS:
            sim = await stack.enter_async_context(SimServer(
                SimConfig(models=list(spec["models"]), profile=spec["hardware"], time_scale=time_scale),
                host="127.0.0.1", port=0))
            backends.append({k: v for k, v in spec.items() if k != "models"} | {"endpoint": sim.url})
        config = validate(settings.model_dump() | {"backends": backends})
        runner = await start(config)
        print(demo_help(client_url(config.server.host, bound_port(runner)), config.server.host), flush=True)
        await wait_for_stop_signal()
        await drain(runner, config.server.shutdown_grace_s)
