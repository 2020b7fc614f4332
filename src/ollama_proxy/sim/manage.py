"""Handlers for Ollama's listing and model-management endpoints (reference 2.1-2.2, 2.7-2.15).

`/`, version, tags, show, ps, pull, push, create, copy, delete and blobs. Pull, push and create
stream `{"status"}` lines ending in `success`; nothing is really downloaded, but the registry
changes as it would. Inference lives in `sim.native`.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from ollama_proxy.sim.config import ModelSpec, canonical_name
from ollama_proxy.sim.models import install, show_body, tags_entry
from ollama_proxy.sim.native import find_model, read_request
from ollama_proxy.sim.rules import SimError
from ollama_proxy.sim.state import SIM_STATE, SimState
from ollama_proxy.sim.wire import LineStream, StreamCut, send_whole

_DIGEST = re.compile(r"^sha256[:-]([0-9a-fA-F]{64})$")
_NAME = re.compile(r"^[A-Za-z0-9][\w.\-/]*(:[\w.\-]+)?$")


def _name(body: dict[str, Any], *keys: str) -> str:
    """The model name from the first key present (`model`, or the deprecated `name`)."""
    value = next((body[k] for k in keys if body.get(k)), "")
    if not isinstance(value, str) or not value:
        raise SimError(400, "model is required")
    if not _NAME.match(value):
        raise SimError(400, "invalid model name")
    return value


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running", content_type="text/plain")


async def version(request: web.Request) -> web.StreamResponse:
    return await send_whole(request, {"version": request.app[SIM_STATE].config.version})


async def tags(request: web.Request) -> web.StreamResponse:
    models = request.app[SIM_STATE].registry.newest_first()
    return await send_whole(request, {"models": [tags_entry(m) for m in models]})


async def show(request: web.Request) -> web.StreamResponse:
    state, body = await read_request(request)
    model = find_model(state, body.get("model") or body.get("name"), "model '{name}' not found")
    return await send_whole(request, show_body(model, verbose=bool(body.get("verbose"))))


async def ps(request: web.Request) -> web.StreamResponse:
    state = request.app[SIM_STATE]
    on_device = state.config.hardware.on_device
    return await send_whole(request, {"models": [r.ps_entry(on_device) for r in state.scheduler.loaded()]})


async def _progress(request: web.Request, state: SimState, body: dict[str, Any],
                    lines: Sequence[dict[str, Any]]) -> web.StreamResponse:
    """Status lines, paced like a fast local transfer; non-streamed requests get only the last one."""
    step = 0.05 * state.config.time_scale
    if body.get("stream", True) is False:
        await asyncio.sleep(step * len(lines))
        return await send_whole(request, lines[-1])
    out = LineStream(request)
    await out.open()
    try:
        for line in lines:
            await out.send(line)
            await asyncio.sleep(step)
        return await out.finish()
    except StreamCut:
        return out.response


def _layer_lines(verb: str, digest: str, size: int) -> list[dict[str, Any]]:
    layer = {"status": f"{verb} {digest[:12]}", "digest": f"sha256:{digest}", "total": size}
    return [layer, layer | {"completed": size // 2}, layer | {"completed": size}]


async def pull(request: web.Request) -> web.StreamResponse:
    state, body = await read_request(request)
    name = canonical_name(_name(body, "model", "name"))
    allowed = state.config.pullable
    if allowed is not None and name.lower() not in {canonical_name(n).lower() for n in allowed}:
        raise SimError(500, "pull model manifest: file does not exist")
    existing = state.registry.get(name)
    spec = existing.spec if existing else ModelSpec.parse(name)
    model = install(spec, state.wall())
    lines = [{"status": "pulling manifest"}, *_layer_lines("pulling", model.weights, spec.size),
             {"status": "verifying sha256 digest"}, {"status": "writing manifest"}, {"status": "success"}]
    state.registry.add(model)
    return await _progress(request, state, body, lines)


async def push(request: web.Request) -> web.StreamResponse:
    state, body = await read_request(request)
    model = find_model(state, _name(body, "model", "name"), "model '{name}' not found")
    lines = [{"status": "retrieving manifest"}, {"status": "starting upload"},
             *_layer_lines("pushing", model.weights, model.spec.size),
             {"status": "pushing manifest"}, {"status": "success"}]
    return await _progress(request, state, body, lines)


async def create(request: web.Request) -> web.StreamResponse:
    state, body = await read_request(request)
    name = canonical_name(_name(body, "model", "name"))
    parameters = body.get("parameters") or {}
    files = body.get("files") or {}
    if not isinstance(parameters, dict) or not isinstance(files, dict):
        raise SimError(400, "parameters and files must be objects")
    now = state.wall()
    if body.get("from"):
        base = find_model(state, body["from"], "model '{name}' not found")
        model = base.renamed(name, now)
        model.parent = base.name
    elif files:
        weights = []
        for digest in files.values():
            match = _DIGEST.match(str(digest))
            if match is None or match[1].lower() not in state.registry.blobs:
                raise SimError(400, f"blob {digest} not found; upload it with POST /api/blobs/:digest")
            weights.append(match[1].lower())
        model = install(ModelSpec.parse(name), now)
        model.weights = weights[0]
    else:
        raise SimError(400, "neither 'from' or 'files' was specified")
    model.parameters.update(parameters)
    model.system = str(body.get("system", model.system))
    model.template = str(body.get("template", model.template))
    state.registry.add(model)
    lines = [{"status": f"using existing layer sha256:{model.weights}"},
             {"status": f"creating new layer sha256:{model.digest}"},
             {"status": "writing manifest"}, {"status": "success"}]
    return await _progress(request, state, body, lines)


async def copy(request: web.Request) -> web.Response:
    state, body = await read_request(request)
    source = find_model(state, body.get("source"), 'model "{name}" not found')
    destination = _name(body, "destination")
    state.registry.add(source.renamed(destination, state.wall()))
    return web.Response(status=200)


async def delete(request: web.Request) -> web.Response:
    state, body = await read_request(request)
    name = _name(body, "model", "name")
    if state.registry.remove(name) is None:
        raise SimError(404, f"model '{name}' not found")
    return web.Response(status=200)


def _digest(request: web.Request) -> str:
    match = _DIGEST.match(request.match_info["digest"])
    if match is None:
        raise SimError(400, "invalid digest format")
    return match[1].lower()


async def head_blob(request: web.Request) -> web.Response:
    known = _digest(request) in request.app[SIM_STATE].registry.blobs
    return web.Response(status=200 if known else 404)


async def post_blob(request: web.Request) -> web.Response:
    """Store a blob after checking the streamed body's sha256; the bytes themselves are not kept."""
    state, expected = request.app[SIM_STATE], _digest(request)
    if expected in state.registry.blobs:
        return web.Response(status=200)
    digest, size = hashlib.sha256(), 0
    async for chunk in request.content.iter_chunked(1 << 16):
        digest.update(chunk)
        size += len(chunk)
    if digest.hexdigest() != expected:
        got = digest.hexdigest()
        raise SimError(400, f'digest mismatch, expected "sha256:{expected}", got "sha256:{got}"')
    state.registry.blobs[expected] = size
    return web.Response(status=201)


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/", root)
    router.add_get("/api/version", version)
    router.add_get("/api/tags", tags)
    router.add_post("/api/show", show)
    router.add_get("/api/ps", ps)
    router.add_post("/api/pull", pull)
    router.add_post("/api/push", push)
    router.add_post("/api/create", create)
    router.add_post("/api/copy", copy)
    router.add_delete("/api/delete", delete)
    router.add_route("HEAD", "/api/blobs/{digest}", head_blob)
    router.add_post("/api/blobs/{digest}", post_blob)
