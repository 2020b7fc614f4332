"""The raw upstream client (`server.upstream_client: raw`) in the real proxy in front of the simulator, driven
by the official clients: the answers are the ones the aiohttp client gives, over pooled connections.

The fault matrix (test_fault_matrix.py) runs against either client with OLLAMA_PROXY_TEST_UPSTREAM=raw|aiohttp.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from ollama_proxy.adapters.http.server import FRONT_KEY
from ollama_proxy.adapters.upstream.aiohttp_client import AiohttpBackendClient
from ollama_proxy.adapters.upstream.raw_client import RawBackendClient
from ollama_proxy.app import bound_port, start
from ollama_proxy.config.load import validate
from ollama_proxy.sim import SimServer


@pytest.fixture
async def raw_proxy_factory() -> AsyncIterator[Callable[..., Any]]:
    """`await raw_proxy_factory(backends)`: the proxy with the raw client, as (base URL, its aiohttp app)."""
    runners: list[web.AppRunner] = []

    async def make(backends: list[dict[str, Any]]) -> tuple[str, web.Application]:
        config = validate({"backends": backends, "server": {"upstream_client": "raw"},
                           "system": {"nvidia_smi": "/nonexistent/nvidia-smi"}})
        runners.append(await start(config, host="127.0.0.1", port=0))
        return f"http://127.0.0.1:{bound_port(runners[-1])}", runners[-1].app

    yield make
    for runner in runners:
        await runner.cleanup()


def client_of(app: web.Application, backend_id: str) -> Any:
    return app[FRONT_KEY].pipeline.pool.backends[backend_id].client


async def test_native_calls_through_the_raw_client(raw_proxy_factory: Callable[..., Any], sim: SimServer,
                                                   ollama_client: Callable[[str], Any]) -> None:
    url, app = await raw_proxy_factory([{"id": "sim", "endpoint": sim.url}])
    upstream = client_of(app, "sim")
    assert isinstance(upstream, RawBackendClient)
    client = ollama_client(url)
    reply = await client.chat(model="llama3.2", messages=[{"role": "user", "content": "Hi"}])
    assert reply.done and reply.message.content
    pieces = [part async for part in await client.generate(model="llama3.2", prompt="Hi", stream=True)]
    assert pieces[-1].done and len(pieces) > 2
    embedded = await client.embed(model="nomic-embed-text", input=["a", "b"])
    assert len(embedded.embeddings) == 2
    assert {m.model for m in (await client.list()).models} >= {"llama3.2:latest"}
    # Sequential calls leave their connections in the pool, ready for the next one.
    assert 1 <= len(upstream._idle) <= 2


async def test_openai_stream_through_the_raw_client(raw_proxy_factory: Callable[..., Any], sim: SimServer) -> None:
    url, _ = await raw_proxy_factory([{"id": "sim", "endpoint": sim.url}])
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused") as client:
        stream = await client.chat.completions.create(model="llama3.2", stream=True,
                                                      messages=[{"role": "user", "content": "Hi"}])
        chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


async def test_a_blob_upload_streams_through_the_raw_client(raw_proxy_factory: Callable[..., Any],
                                                            sim: SimServer) -> None:
    url, _ = await raw_proxy_factory([{"id": "sim", "endpoint": sim.url}])
    payload = b"GGUF" + bytes(range(256)) * 8192
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()

    async def pieces() -> AsyncIterator[bytes]:
        for start_at in range(0, len(payload), 65536):
            yield payload[start_at:start_at + 65536]

    async with aiohttp.ClientSession() as session:
        async with session.head(f"{url}/api/blobs/{digest}") as r:
            assert r.status == 404
        async with session.post(f"{url}/api/blobs/{digest}", data=pieces()) as r:
            assert r.status == 201, await r.text()
        async with session.head(f"{url}/api/blobs/{digest}") as r:
            assert r.status == 200


async def test_an_https_backend_goes_through_aiohttp_and_the_log_says_so(
        raw_proxy_factory: Callable[..., Any], sim: SimServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ollama_proxy"):
        _, app = await raw_proxy_factory([{"id": "sim", "endpoint": sim.url},
                                          {"id": "tls", "endpoint": "https://127.0.0.1:9", "enabled": False}])
    assert isinstance(client_of(app, "sim"), RawBackendClient)
    assert isinstance(client_of(app, "tls"), AiohttpBackendClient)
    assert any("tls" in r.getMessage() and "aiohttp" in r.getMessage() for r in caplog.records)
