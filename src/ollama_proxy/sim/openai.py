"""Ollama's OpenAI-compatible layer under /v1, with its quirks (reference section 6).

Requests are translated the way Ollama's middleware does it: `num_ctx`, `options` and
`keep_alive` are ignored, omitted temperature/top_p are sent as 1.0, `max_tokens` becomes
`num_predict`. Responses are OpenAI-shaped; streams are SSE ending in `data: [DONE]`. Errors are
shaped by the app middleware. Shares inference with the native handlers through `sim.inference`.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from ollama_proxy.sim.inference import Generation, Turn, generation
from ollama_proxy.sim.models import InstalledModel
from ollama_proxy.sim.native import embed_texts, find_model, parse_tools, read_request
from ollama_proxy.sim.rules import SimError, validate_options
from ollama_proxy.sim.state import SIM_STATE
from ollama_proxy.sim.wire import LineStream, StreamCut, send_whole

_NOT_FOUND = "model '{name}' not found"


def _sampling(body: Mapping[str, Any], *, penalties_always: bool) -> dict[str, Any]:
    options: dict[str, Any] = {"temperature": body.get("temperature", 1.0), "top_p": body.get("top_p") or 1.0}
    if body.get("max_tokens") is not None:
        options["num_predict"] = body["max_tokens"]
    if body.get("seed") is not None:
        options["seed"] = body["seed"]
    stop = body.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list):
        options["stop"] = [s for s in stop if isinstance(s, str)]
    for key in ("frequency_penalty", "presence_penalty"):
        if body.get(key) is not None or penalties_always:
            options[key] = body.get(key) or 0.0
    return validate_options(options)


def _messages(raw: Any) -> list[dict[str, Any]]:
    """OpenAI messages to native ones: each content part becomes its own message (ref. 6.1)."""
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise SimError(400, "messages must be an array of message objects")
    if not raw:
        raise SimError(400, "[] is too short - 'messages'")
    native: list[dict[str, Any]] = []
    for message in raw:
        role, content = str(message.get("role", "")).lower(), message.get("content")
        extra = {"tool_name": message["name"]} if role == "tool" and message.get("name") else {}
        if isinstance(content, list):
            for part in content:
                url = part.get("image_url") if isinstance(part, dict) else None
                url = url.get("url", "") if isinstance(url, dict) else url
                if isinstance(url, str) and not url.startswith("data:"):
                    raise SimError(400, "image URLs are not currently supported, please use base64 encoded "
                                        "data instead")
                text = part.get("text", "") if isinstance(part, dict) else ""
                native.append({"role": role, "content": text} | extra)
        else:
            native.append({"role": role, "content": content or ""} | extra)
    return native


def _openai_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": c["id"], "index": i, "type": "function",
             "function": {"name": c["function"]["name"],
                          "arguments": orjson.dumps(c["function"]["arguments"]).decode()}}
            for i, c in enumerate(calls)]


def _usage(gen: Generation) -> dict[str, int]:
    return {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.eval_count,
            "total_tokens": gen.prompt_tokens + gen.eval_count}


def _finish_reason(gen: Generation) -> str:
    return "tool_calls" if gen.reply.tool_calls and gen.reply.done_reason == "stop" else gen.reply.done_reason


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state, body = await read_request(request)
    name = body.get("model")
    model = find_model(state, name, _NOT_FOUND)
    turn = Turn(model, options=_sampling(body, penalties_always=False),
                messages=_messages(body.get("messages")), tools=parse_tools(body.get("tools")))
    created = int(state.wall())
    head = {"id": f"chatcmpl-{state.rng.randrange(999)}", "created": created, "model": name,
            "system_fingerprint": "fp_ollama"}
    async with generation(state, turn) as gen:
        if not body.get("stream"):
            text = "".join([piece async for piece in gen.pieces()])
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if gen.reply.tool_calls:
                message["tool_calls"] = _openai_calls(gen.reply.tool_calls)
            return await send_whole(request, head | {
                "object": "chat.completion", "usage": _usage(gen),
                "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(gen)}]})
        chunk = head | {"object": "chat.completion.chunk"}

        def event(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return chunk | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        out = LineStream(request, sse=True)
        await out.open()
        try:
            role: dict[str, Any] = {"role": "assistant"}  # only the first chunk names the role
            async for piece in gen.pieces():
                await out.send(event(role | {"content": piece}))
                role = {}
            if gen.reply.tool_calls:
                await out.send(event(role | {"tool_calls": _openai_calls(gen.reply.tool_calls)}))
            await out.send(event({}, _finish_reason(gen)))
            if (body.get("stream_options") or {}).get("include_usage"):
                await out.send(chunk | {"choices": [], "usage": _usage(gen)})
            return await out.finish(b"[DONE]")
        except StreamCut:
            return out.response


async def completions(request: web.Request) -> web.StreamResponse:
    state, body = await read_request(request)
    name = body.get("model")
    model = find_model(state, name, _NOT_FOUND)
    prompt, stop = body.get("prompt", ""), body.get("stop")
    if not isinstance(prompt, str):
        raise SimError(400, "invalid type for 'prompt', expected a string")
    if isinstance(stop, list) and not all(isinstance(s, str) for s in stop):
        raise SimError(400, "invalid type for 'stop' field")
    if model.spec.embedding:
        raise SimError(400, f'"{name}" does not support generate')
    turn = Turn(model, options=_sampling(body, penalties_always=True), prompt=prompt,
                suffix=body.get("suffix") or "")
    head = {"id": f"cmpl-{state.rng.randrange(999)}", "object": "text_completion",
            "created": int(state.wall()), "model": name, "system_fingerprint": "fp_ollama"}
    async with generation(state, turn) as gen:
        def choice(text: str, finish: str | None) -> dict[str, Any]:
            return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}

        if not body.get("stream"):
            text = "".join([piece async for piece in gen.pieces()])
            return await send_whole(request, head | {"choices": [choice(text, gen.reply.done_reason)],
                                                     "usage": _usage(gen)})
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        zeros = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        zero = {"usage": zeros} if with_usage else {}
        out = LineStream(request, sse=True)
        await out.open()
        try:
            async for piece in gen.pieces():
                await out.send(head | {"choices": [choice(piece, None)]} | zero)
            await out.send(head | {"choices": [choice("", gen.reply.done_reason)]} | zero)
            if with_usage:
                await out.send(head | {"choices": [], "usage": _usage(gen)})
            return await out.finish(b"[DONE]")
        except StreamCut:
            return out.response


async def embeddings(request: web.Request) -> web.StreamResponse:
    state, body = await read_request(request)
    name = body.get("model")
    model = find_model(state, name, _NOT_FOUND)
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise SimError(400, "invalid input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise SimError(400, f"invalid encoding format: {encoding}")
    dimensions = body.get("dimensions")
    native = {"truncate": True}  # the layer drops options, keep_alive and truncate
    vectors, metrics = await embed_texts(state, model, texts, native,
                                         dimensions if isinstance(dimensions, int) else None)

    def encode(vector: list[float]) -> list[float] | str:
        if encoding == "float":
            return vector
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()

    tokens = metrics["prompt_eval_count"]
    return await send_whole(request, {"object": "list", "model": name,
                          "data": [{"object": "embedding", "embedding": encode(v), "index": i}
                                   for i, v in enumerate(vectors)],
                          "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _model_object(model: InstalledModel) -> dict[str, Any]:
    owner = model.name.rsplit("/", 1)[0] if "/" in model.name else "library"
    return {"id": model.name, "object": "model", "created": int(model.modified_at), "owned_by": owner}


async def list_models(request: web.Request) -> web.StreamResponse:
    models = request.app[SIM_STATE].registry.newest_first()
    # Ollama marshals an empty list as null here (ref. 6.4).
    return await send_whole(request, {"object": "list", "data": [_model_object(m) for m in models] or None})


async def retrieve_model(request: web.Request) -> web.StreamResponse:
    model = find_model(request.app[SIM_STATE], request.match_info["model"], _NOT_FOUND)
    return await send_whole(request, _model_object(model))


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_post("/v1/chat/completions", chat_completions)
    router.add_post("/v1/completions", completions)
    router.add_post("/v1/embeddings", embeddings)
    router.add_get("/v1/models", list_models)
    router.add_get("/v1/models/{model:.+}", retrieve_model)
