"""Ollama's Anthropic-compatible layer, `POST /v1/messages` (Ollama v0.14.0+), as the simulator serves it.

The request becomes a native chat the way Ollama's middleware makes one: the system prompt (a string or
text blocks) first, text blocks joined, base64 images attached, `tool_use` blocks as the assistant's tool
calls and `tool_result` blocks as `tool` messages; `max_tokens` becomes `num_predict`, and there is no way
to send `num_ctx` (the server default holds, which is why a proxy must translate instead of forwarding).
Replies are Message objects; streams are Anthropic's named SSE events. Errors get Anthropic's shape in the
app middleware. Shares inference with the other handlers through `sim.inference`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from ollama_proxy.sim.inference import Generation, Turn, generation
from ollama_proxy.sim.native import find_model, read_request
from ollama_proxy.sim.rules import SimError, validate_options
from ollama_proxy.sim.state import SimState
from ollama_proxy.sim.wire import LineStream, StreamCut, send_whole


def _system(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, list):
        raw = "".join(b.get("text", "") for b in raw if isinstance(b, dict) and b.get("type") == "text")
    return [{"role": "system", "content": raw}] if isinstance(raw, str) and raw else []


def _tool_result_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return content if isinstance(content, str) else ""


def _message(raw: Any) -> list[dict[str, Any]]:
    """One Anthropic message as native ones: tool results first (as their own `tool` messages), then the
    text, images and tool calls."""
    if not isinstance(raw, dict):
        raise SimError(400, "messages must be an array of message objects")
    role, content = str(raw.get("role", "")).lower(), raw.get("content")
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(blocks, list):
        raise SimError(400, "message content must be a string or an array of content blocks")
    text, images, calls, results = [], [], [], []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(str(block.get("text") or ""))
        elif kind == "image":
            source = block.get("source") or {}
            if source.get("type") != "base64":
                raise SimError(400, "invalid image source")
            images.append(source.get("data", ""))
        elif kind == "tool_use":
            if not block.get("id") or not block.get("name"):
                raise SimError(400, "tool_use block missing required 'id' or 'name' field")
            calls.append({"id": block["id"], "function": {"name": block["name"], "arguments": block.get("input")
                                                          or {}}})
        elif kind == "tool_result":
            results.append({"role": "tool", "content": _tool_result_text(block.get("content")),
                            "tool_call_id": block.get("tool_use_id", "")})
    native: list[dict[str, Any]] = list(results)
    if text or images or calls:
        message: dict[str, Any] = {"role": role, "content": "".join(text)}
        if images:
            message["images"] = images
        if calls:
            message["tool_calls"] = calls
        native.append(message)
    return native


def _tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise SimError(400, "tools must be an array of tool objects")
    return [{"type": "function", "function": {"name": t.get("name", ""), "description": t.get("description", ""),
                                              "parameters": t.get("input_schema") or {}}} for t in raw]


def _options(body: Mapping[str, Any]) -> dict[str, Any]:
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens <= 0:
        raise SimError(400, "max_tokens is required and must be a positive integer")
    options: dict[str, Any] = {"num_predict": max_tokens}
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            options[key] = body[key]
    if body.get("stop_sequences"):
        options["stop"] = body["stop_sequences"]
    return validate_options(options)


def _turn(state: SimState, body: Mapping[str, Any]) -> Turn:
    model = find_model(state, body.get("model"), "model '{name}' not found")
    if model.spec.embedding:
        raise SimError(400, f'"{model.name}" does not support chat')
    if (body.get("thinking") or {}).get("type") == "enabled":
        raise SimError(400, f'"{model.name}" does not support thinking')
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise SimError(400, "messages must be a non-empty array")
    messages = _system(body.get("system")) + [m for message in raw for m in _message(message)]
    return Turn(model, options=_options(body), messages=messages, tools=_tools(body.get("tools")))


def _tool_uses(gen: Generation, message_id: str) -> list[dict[str, Any]]:
    return [{"type": "tool_use", "id": f"toolu_{message_id[4:]}_{i}", "name": call["function"]["name"],
             "input": call["function"]["arguments"]} for i, call in enumerate(gen.reply.tool_calls)]


def _stop_reason(gen: Generation) -> str:
    if gen.reply.tool_calls:
        return "tool_use"
    return "max_tokens" if gen.reply.done_reason == "length" else "end_turn"


async def messages(request: web.Request) -> web.StreamResponse:
    state, body = await read_request(request)
    turn = _turn(state, body)
    message_id = f"msg_{state.rng.getrandbits(96):024x}"
    head = {"id": message_id, "type": "message", "role": "assistant", "model": body["model"]}
    async with generation(state, turn) as gen:
        if not body.get("stream"):
            text = "".join([piece async for piece in gen.pieces()])
            content = ([{"type": "text", "text": text}] if text or not gen.reply.tool_calls else [])
            return await send_whole(request, head | {
                "content": content + _tool_uses(gen, message_id), "stop_reason": _stop_reason(gen),
                "stop_sequence": None, "usage": {"input_tokens": gen.prompt_tokens,
                                                 "output_tokens": gen.eval_count}})
        out = LineStream(request, sse=True)
        await out.open()

        async def send(event: dict[str, Any]) -> None:
            await out.send(event, event["type"])

        try:
            await send({"type": "message_start", "message": head | {
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": gen.prompt_tokens, "output_tokens": 0}}})
            index = 0
            async for piece in gen.pieces():
                if index == 0:
                    await send({"type": "content_block_start", "index": 0,
                                "content_block": {"type": "text", "text": ""}})
                    index = 1
                await send({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": piece}})
            if index:
                await send({"type": "content_block_stop", "index": 0})
            for block in _tool_uses(gen, message_id):
                await send({"type": "content_block_start", "index": index, "content_block": block | {"input": {}}})
                await send({"type": "content_block_delta", "index": index, "delta": {
                    "type": "input_json_delta", "partial_json": orjson.dumps(block["input"]).decode()}})
                await send({"type": "content_block_stop", "index": index})
                index += 1
            await send({"type": "message_delta", "delta": {"stop_reason": _stop_reason(gen), "stop_sequence": None},
                        "usage": {"input_tokens": gen.prompt_tokens, "output_tokens": gen.eval_count}})
            await send({"type": "message_stop"})
            return await out.finish()
        except StreamCut:
            return out.response


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/messages", messages)
