"""Native endpoints: shapes, content types and error texts, via the official `ollama` client and raw HTTP."""

from __future__ import annotations

import hashlib
import math

import aiohttp
import orjson
import pytest

from ollama_proxy.sim import ModelSpec, SimServer
from tests.sim.conftest import MakeSim, OllamaFor, call, stats

CHAT = [{"role": "user", "content": "Name one prime."}]


async def test_root_version_and_unknown_paths(sim: SimServer, http: aiohttp.ClientSession) -> None:
    async with http.get(sim.url + "/") as r:
        assert (r.status, r.content_type, await r.text()) == (200, "text/plain", "Ollama is running")
    async with http.head(sim.url + "/") as r:
        assert r.status == 200
    assert await call(http, sim, "GET", "/api/version") == (200, {"version": "0.33.0-rc2"})
    assert await call(http, sim, "GET", "/api/nope") == (404, "404 page not found")
    assert (await call(http, sim, "GET", "/api/chat"))[0] == 405


async def test_list_show_ps_with_the_ollama_client(ollama_for: OllamaFor, sim: SimServer) -> None:
    client = ollama_for(sim)
    listed = (await client.list()).models
    assert [m.model for m in listed] == ["llama3.2:latest", "qwen3:4b", "nomic-embed-text:latest"]
    shown = await client.show("llama3.2")
    assert shown.capabilities == ["completion", "tools"]
    assert shown.modelinfo is not None and shown.modelinfo["llama.context_length"] == 131072
    assert (await client.ps()).models == []
    await client.generate(model="llama3.2", prompt="hi")
    [loaded] = (await client.ps()).models
    assert (loaded.model, loaded.context_length, loaded.size_vram) == ("llama3.2:latest", 4096, 0)


async def test_tags_details_carry_lengths(sim: SimServer, http: aiohttp.ClientSession) -> None:
    _, body = await call(http, sim, "GET", "/api/tags")
    embed = next(m for m in body["models"] if m["name"] == "nomic-embed-text:latest")
    assert embed["details"]["context_length"] == 2048
    assert embed["capabilities"] == ["embedding"]


async def test_show_hides_long_arrays_unless_verbose(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    vocab = {"tokenizer.ggml.tokens": [f"t{i}" for i in range(50)], "tokenizer.ggml.eos_token_id": 2}
    sim = await make_sim(models=[ModelSpec.parse("tiny", tokenizer_info=vocab)])
    _, brief = await call(http, sim, "POST", "/api/show", {"model": "tiny"})
    _, full = await call(http, sim, "POST", "/api/show", {"model": "tiny", "verbose": True})
    assert brief["model_info"]["tokenizer.ggml.tokens"] == []
    assert len(full["model_info"]["tokenizer.ggml.tokens"]) == 50
    assert brief["model_info"]["tokenizer.ggml.eos_token_id"] == 2


async def test_generate_stream_lines_and_final_metrics(sim: SimServer, http: aiohttp.ClientSession) -> None:
    async with http.post(sim.url + "/api/generate", json={"model": "llama3.2", "prompt": "hi"}) as r:
        assert r.content_type == "application/x-ndjson"
        lines = [orjson.loads(line) async for line in r.content]
    assert all(not line["done"] for line in lines[:-1]) and lines[-1]["done"]
    final = lines[-1]
    assert final["done_reason"] == "stop" and final["response"] == ""
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
                "eval_count", "eval_duration"):
        assert final[key] > 0, key
    assert final["eval_count"] == len(lines) - 1
    assert len(final["context"]) == final["prompt_eval_count"] + final["eval_count"]


async def test_stream_and_non_stream_agree(ollama_for: OllamaFor, sim: SimServer) -> None:
    client = ollama_for(sim)
    whole = await client.chat(model="llama3.2", messages=CHAT, options={"seed": 3})
    parts = [p async for p in await client.chat(model="llama3.2", messages=CHAT, options={"seed": 3},
                                                stream=True)]
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].eval_count == whole.eval_count


async def test_num_predict_ends_with_length(ollama_for: OllamaFor, sim: SimServer) -> None:
    reply = await ollama_for(sim).generate(model="llama3.2", prompt="hi",
                                                           options={"num_predict": 2})
    assert (reply.eval_count, reply.done_reason) == (2, "length")


async def test_chat_tool_call_on_final_line(ollama_for: OllamaFor, sim: SimServer) -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "description": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    client = ollama_for(sim)
    parts = [p async for p in await client.chat(model="qwen3:4b", stream=True, tools=[tool],
                                                messages=[{"role": "user", "content": "Weather in Oslo?"}])]
    final = parts[-1]
    assert final.done and final.done_reason == "stop"
    [call_] = final.message.tool_calls or []
    assert (call_.function.name, call_.function.arguments) == ("get_weather", {"city": "Oslo"})


async def test_load_and_unload_on_empty_requests(sim: SimServer, http: aiohttp.ClientSession) -> None:
    status, body = await call(http, sim, "POST", "/api/generate", {"model": "llama3.2"})
    assert (status, body["done"], body["done_reason"], body["response"]) == (200, True, "load", "")
    unload = {"model": "llama3.2", "messages": [], "keep_alive": 0}
    _, chat = await call(http, sim, "POST", "/api/chat", unload)
    assert chat["done_reason"] == "unload"
    assert (await call(http, sim, "GET", "/api/ps"))[1] == {"models": []}


async def test_keep_alive_zero_unloads_after_the_request(ollama_for: OllamaFor, sim: SimServer) -> None:
    client = ollama_for(sim)
    await client.generate(model="llama3.2", prompt="hi", keep_alive=0)
    assert (await client.ps()).models == []


async def test_embed_and_legacy_embeddings(ollama_for: OllamaFor, sim: SimServer,
                                           http: aiohttp.ClientSession) -> None:
    client = ollama_for(sim)
    reply = await client.embed(model="nomic-embed-text", input=["first text", "second text"], dimensions=4)
    assert len(reply.embeddings) == 2 and all(len(v) == 4 for v in reply.embeddings)
    assert all(math.isclose(sum(x * x for x in v), 1.0) for v in reply.embeddings)
    again = await client.embed(model="nomic-embed-text", input="first text")
    assert len(again.embeddings[0]) == 768
    _, legacy = await call(http, sim, "POST", "/api/embeddings", {"model": "nomic-embed-text", "prompt": "x"})
    assert len(legacy["embedding"]) == 768
    _, empty = await call(http, sim, "POST", "/api/embed", {"model": "nomic-embed-text", "input": []})
    assert empty == {"model": "nomic-embed-text", "embeddings": []}


@pytest.mark.parametrize(("path", "body", "status", "error"), [
    pytest.param("/api/generate", {"model": "nope", "prompt": "x"}, 404, "model 'nope' not found",
                 id="generate"),
    pytest.param("/api/chat", {"model": "nope", "messages": CHAT}, 404, "model 'nope' not found", id="chat"),
    pytest.param("/api/embed", {"model": "nope", "input": "x"}, 404,
                 'model "nope" not found, try pulling it first', id="embed"),
    pytest.param("/api/embeddings", {"model": "nope", "prompt": "x"}, 404,
                 'model "nope" not found, try pulling it first', id="embeddings"),
    pytest.param("/api/show", {"model": "nope"}, 404, "model 'nope' not found", id="show"),
    pytest.param("/api/copy", {"source": "nope", "destination": "x"}, 404, 'model "nope" not found',
                 id="copy"),
    pytest.param("/api/show", {}, 400, "model is required", id="show-no-model"),
    pytest.param("/api/chat", {"model": "llama3.2", "messages": CHAT, "options": {"num_ctx": "8192"}}, 500,
                 'option "num_ctx" must be of type integer', id="option-type"),
    pytest.param("/api/generate", {"model": "llama3.2", "prompt": "x", "keep_alive": "300"}, 400,
                 'time: missing unit in duration "300"', id="keep-alive-unitless"),
    pytest.param("/api/generate", {"model": "nomic-embed-text", "prompt": "x"}, 400,
                 '"nomic-embed-text" does not support generate', id="embedding-model"),
    pytest.param("/api/embed", {"model": "nomic-embed-text", "input": 5}, 400, "invalid input type",
                 id="embed-input-type"),
])
async def test_error_texts(sim: SimServer, http: aiohttp.ClientSession, path: str, body: dict[str, object],
                           status: int, error: str) -> None:
    assert await call(http, sim, "POST", path, body) == (status, {"error": error})


async def test_delete_unknown_is_404(sim: SimServer, http: aiohttp.ClientSession) -> None:
    assert await call(http, sim, "DELETE", "/api/delete", {"model": "nope"}) == (
        404, {"error": "model 'nope' not found"})


async def test_malformed_json_is_400(sim: SimServer, http: aiohttp.ClientSession) -> None:
    async with http.post(sim.url + "/api/chat", data=b"{not json") as r:
        assert r.status == 400
        assert r.content_type == "application/json"
        assert "error" in await r.json()


async def test_pull_copy_create_delete(ollama_for: OllamaFor, sim: SimServer,
                                       http: aiohttp.ClientSession) -> None:
    client = ollama_for(sim)
    statuses = [p.status async for p in await client.pull("gemma3:1b", stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    copy = {"source": "gemma3:1b", "destination": "mine"}
    assert await call(http, sim, "POST", "/api/copy", copy) == (200, "")
    created = [p.status async for p in await client.create(model="big", from_="llama3.2",
                                                           parameters={"num_ctx": 32768}, stream=True)]
    assert created[-1] == "success"
    _, shown = await call(http, sim, "POST", "/api/show", {"model": "big"})
    assert "num_ctx" in shown["parameters"] and shown["details"]["parent_model"] == "llama3.2:latest"
    names = {m.model for m in (await client.list()).models}
    assert {"gemma3:1b", "mine:latest", "big:latest"} <= names
    assert await call(http, sim, "DELETE", "/api/delete", {"model": "mine"}) == (200, "")
    assert (await call(http, sim, "POST", "/api/show", {"model": "mine"}))[0] == 404
    pushed = [p.status async for p in await client.push("big", stream=True)]
    assert pushed[-1] == "success"


async def test_pull_of_unknown_upstream_name_fails(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(pullable=["gemma3"])
    status, body = await call(http, sim, "POST", "/api/pull", {"model": "nothing-here"})
    assert status == 500 and "file does not exist" in body["error"]
    assert await call(http, sim, "POST", "/api/pull", {"model": "gemma3", "stream": False}) == (
        200, {"status": "success"})


async def test_blobs_verify_digest(sim: SimServer, http: aiohttp.ClientSession) -> None:
    payload = b"GGUF" + bytes(range(256)) * 64
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    assert (await call(http, sim, "HEAD", f"/api/blobs/{digest}"))[0] == 404
    wrong = "sha256:" + "0" * 64
    status, body = await call(http, sim, "POST", f"/api/blobs/{wrong}", data=payload)
    assert status == 400 and body["error"].startswith("digest mismatch")
    assert (await call(http, sim, "POST", f"/api/blobs/{digest}", data=payload))[0] == 201
    assert (await call(http, sim, "POST", f"/api/blobs/{digest}", data=payload))[0] == 200
    assert (await call(http, sim, "HEAD", f"/api/blobs/{digest}"))[0] == 200
    assert (await call(http, sim, "HEAD", "/api/blobs/md5-abc"))[0] == 400
    create = {"model": "fromblob", "files": {"m.gguf": digest}}
    status, _ = await call(http, sim, "POST", "/api/create", create)
    assert status == 200


async def test_stats_record_requests_and_bodies(sim: SimServer, http: aiohttp.ClientSession) -> None:
    await call(http, sim, "POST", "/api/chat", {"model": "llama3.2", "messages": CHAT, "stream": False,
                                                "options": {"temperature": 0}})
    seen = await stats(http, sim)
    assert seen["requests"] == {"/api/chat": 1}
    assert seen["last_body"]["/api/chat"]["options"] == {"temperature": 0}
    assert seen["last_options"] == {"temperature": 0.0}
    assert seen["loads"] == 1 and seen["loaded"]["llama3.2:latest"]["context_length"] == 4096
    await call(http, sim, "POST", "/sim/reset")
    assert (await stats(http, sim))["requests"] == {}
