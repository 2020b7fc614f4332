"""The foundation, end to end: the official `ollama` client through the real proxy against the simulator."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import aiohttp
import ollama
import pytest

from ollama_proxy.sim import SimServer


async def sim_fault(sim: SimServer, **fault: Any) -> None:
    # Aimed at inference: with sizing on, the proxy's own /api/show lookups must not draw the fault.
    fault.setdefault("paths", ["/api/generate", "/api/chat"])
    async with aiohttp.ClientSession() as session, session.post(f"{sim.url}/sim/faults", json=fault) as r:
        assert r.status == 200, await r.text()


async def sim_stats(sim: SimServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{sim.url}/sim/stats") as r:
        return await r.json()


async def test_list_show_ps_version(ollama_client: Any, proxy: str) -> None:
    client = ollama_client(proxy)
    names = {m.model for m in (await client.list()).models}
    assert {"llama3.2:latest", "qwen3:4b", "nomic-embed-text:latest"} <= names
    shown = await client.show("llama3.2")
    assert shown.modelinfo is not None
    assert any(k.endswith(".context_length") for k in shown.modelinfo)
    await client.generate(model="llama3.2", prompt="warm up", stream=False)
    loaded = (await client.ps()).models
    assert [m.model for m in loaded] == ["llama3.2:latest"]
    async with aiohttp.ClientSession() as session, session.get(f"{proxy}/api/version") as r:
        assert "version" in await r.json()


async def test_chat_and_generate_streamed_and_not(ollama_client: Any, proxy: str) -> None:
    client = ollama_client(proxy)
    reply = await client.chat(model="llama3.2", messages=[{"role": "user", "content": "Hello there"}])
    assert reply.done and reply.message.content and reply.prompt_eval_count
    parts = [p async for p in await client.chat(model="llama3.2", stream=True,
                                                   messages=[{"role": "user", "content": "Hello there"}])]
    assert len(parts) > 2 and parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts) == reply.message.content

    generated = await client.generate(model="qwen3:4b", prompt="Count to three", options={"num_predict": 5})
    assert generated.done_reason == "length" and generated.eval_count == 5
    chunks = [c async for c in await client.generate(model="qwen3:4b", prompt="Count", stream=True)]
    assert chunks[-1].done and chunks[-1].context


async def test_embed(ollama_client: Any, proxy: str) -> None:
    client = ollama_client(proxy)
    result = await client.embed(model="nomic-embed-text", input=["first text", "second text"])
    assert len(result.embeddings) == 2
    assert abs(sum(x * x for x in result.embeddings[0]) - 1.0) < 1e-6


async def test_unknown_model_stays_404(ollama_client: Any, proxy: str) -> None:
    client = ollama_client(proxy)
    with pytest.raises(ollama.ResponseError) as info:
        await client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as shown:
        await client.show("no-such-model")
    assert shown.value.status_code == 404


@pytest.mark.parametrize(("body", "message"), [
    pytest.param(b"{not json", "invalid JSON", id="malformed"),
    pytest.param(b"[1, 2]", "must be a JSON object", id="not-an-object"),
    pytest.param(b"", "missing request body", id="empty"),
])
async def test_malformed_input_gets_400_and_proxy_keeps_serving(proxy: str, body: bytes, message: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{proxy}/api/chat", data=body) as r:
            assert r.status == 400
            assert message in (await r.json())["error"]
        async with session.get(f"{proxy}/api/tags") as r:
            assert r.status == 200


async def test_oversized_body_gets_413(proxy_factory: Any, sim: SimServer) -> None:
    url = await proxy_factory({"backends": [{"id": "sim", "endpoint": sim.url}],
                               "server": {"max_body_bytes": 4096}})
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/api/generate", data=b'{"model": "llama3.2", "prompt": "' +
                                b"x" * 10_000 + b'"}') as r:
            assert r.status == 413
            assert "max_body_bytes" in (await r.json())["error"]
        async with session.get(f"{url}/api/tags") as r:
            assert r.status == 200


async def test_unreachable_backend_gets_502_naming_it(ollama_client: Any, proxy_factory: Any) -> None:
    url = await proxy_factory({"backends": [{"id": "gone", "endpoint": "http://127.0.0.1:9"}]})
    client = ollama_client(url)
    with pytest.raises(ollama.ResponseError) as info:
        await client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 502
    assert "gone" in str(info.value)


async def test_backend_dying_mid_stream_ends_with_error_line(ollama_client: Any, proxy: str, sim: SimServer) -> None:
    await sim_fault(sim, mode="drop_mid_stream", after_chunks=2, count=1)
    client = ollama_client(proxy)
    seen = []
    with pytest.raises(ollama.ResponseError) as info:
        async for part in await client.chat(model="llama3.2", stream=True,
                                            messages=[{"role": "user", "content": "tell me a long story"}]):
            seen.append(part)
    assert len(seen) >= 1
    assert "sim" in str(info.value)
    # and the proxy keeps serving
    assert (await client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])).done


async def test_upstream_error_status_passes_through(proxy: str, sim: SimServer) -> None:
    await sim_fault(sim, mode="error", status=500, count=1)
    body = {"model": "llama3.2", "stream": False, "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as session, session.post(f"{proxy}/api/chat", json=body) as r:
        assert r.status == 500
        assert "error" in await r.json()


async def test_client_disconnect_cancels_upstream(proxy: str, sim: SimServer) -> None:
    await sim_fault(sim, mode="hang", count=1)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(asyncio.TimeoutError):
            async with session.post(f"{proxy}/api/chat", json={"model": "llama3.2", "messages": [
                    {"role": "user", "content": "x"}]}, timeout=aiohttp.ClientTimeout(total=0.5)) as r:
                await r.read()
    for _ in range(50):
        stats = await sim_stats(sim)
        if stats.get("cancelled", 0) >= 1:
            break
        await asyncio.sleep(0.05)
    assert stats.get("cancelled", 0) >= 1


async def test_request_id_is_echoed_or_generated_and_passed_on(proxy: str, sim: SimServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{proxy}/api/tags", headers={"X-Request-ID": "abc-123"}) as r:
            assert r.headers["X-Request-ID"] == "abc-123"
        async with session.get(f"{proxy}/api/tags") as r:
            generated = r.headers["X-Request-ID"]
            assert len(generated) >= 8
        async with session.get(f"{sim.url}/sim/stats") as r:
            assert (await r.json())["last_headers"]["/api/tags"]["x-request-id"] == generated


async def test_root_and_head(proxy: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{proxy}/") as r:
            assert r.status == 200 and await r.text() == "Ollama is running"
        async with session.head(f"{proxy}/") as r:
            assert r.status == 200


async def test_foreign_host_and_allowed_origin(proxy: str, sim: SimServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{proxy}/api/tags", headers={"Host": "api.example.com",
                                                             "Origin": "http://localhost:3000"}) as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        async with session.get(f"{proxy}/api/tags", headers={"Origin": "https://evil.example"}) as r:
            assert r.status == 403
        async with session.get(f"{sim.url}/sim/stats") as r:
            forwarded = (await r.json())["last_headers"]["/api/tags"]
    # Ollama refuses a foreign Host or an unknown Origin with an empty 403: neither is passed on.
    assert forwarded["host"].startswith("127.0.0.1:")
    assert "origin" not in forwarded


async def test_blob_upload_is_streamed(proxy: str) -> None:
    payload = b"GGUF" + bytes(range(256)) * 4096
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()

    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(payload), 65536):
            yield payload[i:i + 65536]

    async with aiohttp.ClientSession() as session:
        async with session.post(f"{proxy}/api/blobs/{digest}", data=chunks()) as r:
            assert r.status == 201, await r.text()
        async with session.head(f"{proxy}/api/blobs/{digest}") as r:
            assert r.status == 200


async def test_health_lists_backends_and_sizes(proxy: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{proxy}/health") as r:
        health = await r.json()
    assert health["status"] == "ok"
    assert health["backends"]["sim"]["reachable"] is True
    assert health["context"]["sizes"] == [2048, 4096, 8192, 16384, 32768, 65536, 131072]


async def test_api_keys_guard_everything_but_health(proxy_factory: Any, sim: SimServer,
                                                    ollama_client: Any) -> None:
    url = await proxy_factory({"backends": [{"id": "sim", "endpoint": sim.url}],
                               "server": {"api_keys": ["s3cret"]}})
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/api/tags") as r:
            assert r.status == 401
            assert "API key" in (await r.json())["error"]
        async with session.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
            assert (await r.json())["error"]["type"] == "authentication_error"
        async with session.get(f"{url}/api/tags", headers={"X-API-Key": "s3cret"}) as r:
            assert r.status == 200
        async with session.get(f"{url}/health") as r:
            assert r.status == 200
    # The key is the proxy's: it is not passed on to the backend.
    client = ollama.AsyncClient(host=url, headers={"Authorization": "Bearer s3cret"})
    try:
        assert (await client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])).done
    finally:
        await client._client.aclose()
    async with aiohttp.ClientSession() as session, session.get(f"{sim.url}/sim/stats") as r:
        forwarded = (await r.json())["last_headers"]["/api/chat"]
    assert "authorization" not in forwarded
    assert forwarded["user-agent"].startswith("ollama-python")


async def test_metrics_count_requests_and_show_backend_state(proxy: str, ollama_client: Any) -> None:
    client = ollama_client(proxy)
    await client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(ollama.ResponseError):
        await client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    async with aiohttp.ClientSession() as session, session.get(f"{proxy}/metrics") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    assert 'ollama_proxy_requests_total{backend="sim",status="200"} 1.0' in text
    assert 'ollama_proxy_requests_total{backend="sim",status="404"} 1.0' in text
    assert 'ollama_proxy_backend_up{backend="sim"} 1.0' in text
    assert 'ollama_proxy_backend_queued{backend="sim",priority="critical"} 0.0' in text
    assert "ollama_proxy_truncations_detected_total 0.0" in text


async def test_every_backend_down_fails_health_and_both_model_lists_alike(proxy_factory: Any) -> None:
    # Two dead ports: the merged views are used, and nothing answers them.
    dead = [{"id": f"dead{i}", "endpoint": f"http://127.0.0.1:{port}"} for i, port in enumerate((9, 19))]
    url = await proxy_factory({"backends": dead})
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/health") as r:
            assert (r.status, (await r.json())["status"]) == (503, "down")
        async with session.get(f"{url}/api/tags") as tags, session.get(f"{url}/v1/models") as models:
            assert tags.status == models.status == 502
            assert "dead0" in (await tags.json())["error"]
            assert "dead1" in (await models.json())["error"]["message"]


async def test_one_backend_down_is_degraded_but_healthy(proxy_factory: Any, sim: SimServer) -> None:
    url = await proxy_factory({"backends": [{"id": "sim", "endpoint": sim.url},
                                            {"id": "dead", "endpoint": "http://127.0.0.1:9"}]})
    async with aiohttp.ClientSession() as session, session.get(f"{url}/health") as r:
        assert (r.status, (await r.json())["status"]) == (200, "degraded")
