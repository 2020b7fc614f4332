"""Handlers for Ollama's native inference endpoints: /api/generate, /api/chat, /api/embed, /api/embeddings.

They validate requests as Ollama does (reference 2.3-2.6, exact 404 texts from 1.7), then hand
the work to `sim.inference` and write NDJSON or merged JSON. Model management lives in `sim.manage`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from ollama_proxy.sim.inference import Generation, Turn, generation, load_only, settings_for
from ollama_proxy.sim.models import InstalledModel, timestamp
from ollama_proxy.sim.rules import SimError, nanoseconds, parse_keep_alive, validate_options
from ollama_proxy.sim.state import SIM_STATE, SimState
from ollama_proxy.sim.textgen import embed_vector, normalise
from ollama_proxy.sim.tokenize import pseudo_token_ids
from ollama_proxy.sim.wire import LineStream, StreamCut, read_json, send_whole


async def read_request(request: web.Request) -> tuple[SimState, dict[str, Any]]:
    """The server state and the request's JSON body (recorded in the stats as the path's last body)."""
    state = request.app[SIM_STATE]
    return state, await read_json(request, state.stats.last_body.__setitem__)


def find_model(state: SimState, name: Any, not_found: str) -> InstalledModel:
    """The installed model, or the endpoint's own 404 text (`{name}` is filled in)."""
    if not isinstance(name, str) or not name:
        raise SimError(400, "model is required")
    model = state.registry.get(name)
    if model is None:
        raise SimError(404, not_found.format(name=name))
    return model


def _check_chat_model(model: InstalledModel, name: str, body: Mapping[str, Any], kind: str) -> None:
    if model.spec.embedding:
        raise SimError(400, f'"{name}" does not support {kind}')
    if body.get("think") not in (None, False):
        raise SimError(400, f'"{name}" does not support thinking')


def _turn_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    shift, truncate = body.get("shift"), body.get("truncate", True)
    if (shift is not None and not isinstance(shift, bool)) or not isinstance(truncate, bool):
        raise SimError(400, "truncate and shift must be booleans")
    return {"options": validate_options(body.get("options")),
            "keep_alive_s": parse_keep_alive(body.get("keep_alive")), "shift": shift, "truncate": truncate}


async def _load_or_unload(state: SimState, turn: Turn) -> str:
    if turn.keep_alive_s == 0:
        state.scheduler.unload(turn.model)
        return "unload"
    await load_only(state, turn)
    return "load"


async def _stream(request: web.Request, gen: Generation, line: Callable[[str], dict[str, Any]],
                  final: Callable[[], dict[str, Any]]) -> web.StreamResponse:
    out = LineStream(request)
    await out.open()
    try:
        async for piece in gen.pieces():
            await out.send(line(piece) | {"done": False})
        await out.send(final())
        return await out.finish()
    except StreamCut:
        return out.response


async def generate(request: web.Request) -> web.StreamResponse:
    state, body = await read_request(request)
    name = body.get("model")
    model = find_model(state, name, "model '{name}' not found")
    _check_chat_model(model, str(name), body, "generate")
    if body.get("raw") and (body.get("template") or body.get("system") or body.get("context")):
        raise SimError(400, "raw mode does not support template, system, or context")
    if body.get("suffix"):
        raise SimError(400, f'"{name}" does not support insert')
    prompt = body.get("prompt") or ""
    if not isinstance(prompt, str):
        raise SimError(400, "prompt must be a string")
    turn = Turn(model, prompt=prompt, system=str(body.get("system") or ""), **_turn_fields(body))
    base = {"model": name}
    if not prompt:
        reason = await _load_or_unload(state, turn)
        return await send_whole(request, base | {"created_at": timestamp(state.wall()), "response": "",
                                                 "done": True, "done_reason": reason})
    async with generation(state, turn) as gen:
        def line(text: str) -> dict[str, Any]:
            return base | {"created_at": timestamp(state.wall()), "response": text}

        def final() -> dict[str, Any]:
            last = line("") | {"done": True, "done_reason": gen.reply.done_reason}
            if not body.get("raw"):
                last["context"] = pseudo_token_ids(prompt, gen.prompt_tokens + gen.eval_count)
            return last | gen.metrics()

        if body.get("stream", True) is not False:
            return await _stream(request, gen, line, final)
        text = "".join([piece async for piece in gen.pieces()])
        return await send_whole(request, final() | {"response": text})


def parse_messages(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise SimError(400, "messages must be an array of message objects")
    return [m | {"role": str(m.get("role", "")).lower()} for m in raw]


def parse_tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise SimError(400, "tools must be an array of tool objects")
    return raw


async def chat(request: web.Request) -> web.StreamResponse:
    state, body = await read_request(request)
    name = body.get("model")
    model = find_model(state, name, "model '{name}' not found")
    _check_chat_model(model, str(name), body, "chat")
    messages, tools = parse_messages(body.get("messages")), parse_tools(body.get("tools"))
    turn = Turn(model, messages=messages, tools=tools, **_turn_fields(body))
    base = {"model": name}
    if not messages:
        reason = await _load_or_unload(state, turn)
        return await send_whole(request, base | {"created_at": timestamp(state.wall()),
                                     "message": {"role": "assistant", "content": ""},
                                     "done": True, "done_reason": reason})
    async with generation(state, turn) as gen:
        def line(text: str) -> dict[str, Any]:
            return base | {"created_at": timestamp(state.wall()),
                           "message": {"role": "assistant", "content": text}}

        def final() -> dict[str, Any]:
            last = line("") | {"done": True, "done_reason": gen.reply.done_reason} | gen.metrics()
            if gen.reply.tool_calls:  # the native path delivers calls on the final line (ref. 2.4)
                last["message"]["tool_calls"] = gen.reply.tool_calls
            return last

        if body.get("stream", True) is not False:
            return await _stream(request, gen, line, final)
        text = "".join([piece async for piece in gen.pieces()])
        last = final()
        last["message"]["content"] = text
        return await send_whole(request, last)


async def embed_texts(state: SimState, model: InstalledModel, texts: Sequence[str], body: Mapping[str, Any],
                      dimensions: int | None) -> tuple[list[list[float]], dict[str, int]]:
    """Embed each text, cutting over-long ones at the end (ref. 2.5); returns vectors and metrics."""
    truncate = body.get("truncate", True)
    turn = Turn(model, options=validate_options(body.get("options")),
                keep_alive_s=parse_keep_alive(body.get("keep_alive")))
    settings = settings_for(state, turn)
    state.stats.record_options(model.name, turn.options)
    size = model.spec.embedding_length
    if dimensions is not None and not 0 < dimensions <= size:
        raise SimError(400, f"invalid dimensions {dimensions}: must be between 1 and {size}")
    lease = await state.scheduler.acquire(model, settings, turn.keep_alive_s)
    try:
        limit = settings.num_ctx - 2  # room for BOS and EOS
        vectors, total = [], 0
        for text in texts:
            tokens = model.spec.tokenize(text)
            if tokens > limit:
                if truncate is False:
                    raise SimError(400, "the input length exceeds the context length")
                state.stats.truncations[model.name] += 1
                text, tokens = text[: len(text) * limit // tokens], limit
            total += tokens
            vectors.append(normalise(embed_vector(model.name, text, size)[:dimensions or size]))
        profile = state.config.hardware
        seconds = profile.ttft_s / 4 + total / profile.prompt_tokens_per_s
        await asyncio.sleep(seconds * state.config.time_scale)
    finally:
        state.scheduler.release(lease)
    load = lease.load_s or 0.005
    return vectors, {"total_duration": nanoseconds(load + seconds), "load_duration": nanoseconds(load),
                     "prompt_eval_count": total}


def _dimensions(body: Mapping[str, Any]) -> int | None:
    value = body.get("dimensions")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise SimError(400, "dimensions must be an integer")
    return value


async def embed(request: web.Request) -> web.StreamResponse:
    state, body = await read_request(request)
    name = body.get("model")
    model = find_model(state, name, 'model "{name}" not found, try pulling it first')
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw if raw is not None else []
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise SimError(400, "invalid input type")
    if not any(texts):
        await load_only(state, Turn(model, options=validate_options(body.get("options")),
                                    keep_alive_s=parse_keep_alive(body.get("keep_alive"))))
        return await send_whole(request, {"model": name, "embeddings": []})
    vectors, metrics = await embed_texts(state, model, texts, body, _dimensions(body))
    return await send_whole(request, {"model": name, "embeddings": vectors} | metrics)


async def embeddings(request: web.Request) -> web.StreamResponse:
    """The legacy endpoint: one prompt, one vector, no metrics."""
    state, body = await read_request(request)
    model = find_model(state, body.get("model"), 'model "{name}" not found, try pulling it first')
    prompt = body.get("prompt") or ""
    if not isinstance(prompt, str):
        raise SimError(400, "prompt must be a string")
    if not prompt:
        await load_only(state, Turn(model, options=validate_options(body.get("options"))))
        return await send_whole(request, {"embedding": []})
    vectors, _ = await embed_texts(state, model, [prompt], body, None)
    return await send_whole(request, {"embedding": vectors[0]})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/generate", generate)
    app.router.add_post("/api/chat", chat)
    app.router.add_post("/api/embed", embed)
    app.router.add_post("/api/embeddings", embeddings)
