"""Ollama's OpenAI Responses layer, `POST /v1/responses` (stateless, Ollama v0.13.3+), as the simulator
serves it.

`input` (a string or items: messages with text and base64 image parts, `function_call` and
`function_call_output` items) and `instructions` become a native chat; `max_output_tokens` becomes
`num_predict`, omitted temperature/top_p are sent as 1.0 as the chat layer does, and `num_ctx` cannot be
sent. Nothing is stored, so `previous_response_id` is ignored. Replies are Response objects; streams are
the Responses events, named, each with its `sequence_number`. Errors are OpenAI-shaped (app middleware).
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

_ROLES = {"developer": "system"}


def _message(item: Mapping[str, Any]) -> dict[str, Any]:
    role, content = str(item.get("role", "user")), item.get("content")
    if isinstance(content, str):
        return {"role": _ROLES.get(role, role), "content": content}
    if not isinstance(content, list):
        raise SimError(400, "invalid message content")
    text, images = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            text.append(str(part.get("text") or ""))
        elif kind == "input_image":
            url = str(part.get("image_url") or "")
            if not url.startswith("data:"):
                raise SimError(400, "image URLs are not currently supported, please use base64 encoded data "
                                    "instead")
            images.append(url.partition(",")[2])
    native: dict[str, Any] = {"role": _ROLES.get(role, role), "content": "".join(text)}
    return native | ({"images": images} if images else {})


def _input(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise SimError(400, "input must be a string or an array of input items")
    native: list[dict[str, Any]] = []
    for item in raw:
        kind = item.get("type", "message")
        if kind == "message":
            native.append(_message(item))
        elif kind == "function_call":
            call = {"id": item.get("call_id", ""), "function": {
                "name": item.get("name", ""), "arguments": orjson.loads(item.get("arguments") or "{}")}}
            native.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            native.append({"role": "tool", "content": str(item.get("output") or ""),
                           "tool_call_id": item.get("call_id", "")})
        else:
            raise SimError(400, f"unsupported input item type: {kind}")
    return native


def _tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, dict) and t.get("type") == "function" for t in raw):
        raise SimError(400, "tools must be an array of function tools")
    return [{"type": "function", "function": {"name": t.get("name", ""), "description": t.get("description", ""),
                                              "parameters": t.get("parameters") or {}}} for t in raw]


def _turn(state: SimState, body: Mapping[str, Any]) -> Turn:
    model = find_model(state, body.get("model"), "model '{name}' not found")
    if model.spec.embedding:
        raise SimError(400, f'"{model.name}" does not support chat')
    instructions = body.get("instructions")
    messages = [{"role": "system", "content": instructions}] if isinstance(instructions, str) and instructions \
        else []
    options: dict[str, Any] = {"temperature": body.get("temperature", 1.0), "top_p": body.get("top_p") or 1.0}
    if body.get("max_output_tokens") is not None:
        options["num_predict"] = body["max_output_tokens"]
    return Turn(model, options=validate_options(options), messages=messages + _input(body.get("input")),
                tools=_tools(body.get("tools")))


def _items(gen: Generation, response_id: str, text: str) -> list[dict[str, Any]]:
    """The output items: the message (when there is text or no call), then one item per function call."""
    items: list[dict[str, Any]] = []
    if text or not gen.reply.tool_calls:
        items.append({"type": "message", "id": f"msg_{response_id[5:]}", "status": "completed",
                      "role": "assistant",
                      "content": [{"type": "output_text", "text": text, "annotations": []}]})
    items += [{"type": "function_call", "id": f"fc_{response_id[5:]}_{i}", "call_id": call["id"],
               "name": call["function"]["name"], "arguments": orjson.dumps(call["function"]["arguments"]).decode(),
               "status": "completed"} for i, call in enumerate(gen.reply.tool_calls)]
    return items


def _response(head: dict[str, Any], gen: Generation | None, output: list[dict[str, Any]]) -> dict[str, Any]:
    """The Response object: in progress (`gen` None, as the stream opens), completed or cut short."""
    if gen is None:
        return head | {"status": "in_progress", "incomplete_details": None, "output": output, "usage": None}
    incomplete = gen.reply.done_reason == "length"
    usage = {"input_tokens": gen.prompt_tokens, "output_tokens": gen.eval_count,
             "total_tokens": gen.prompt_tokens + gen.eval_count,
             "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
    return head | {"status": "incomplete" if incomplete else "completed",
                   "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
                   "output": output, "usage": usage}


async def responses(request: web.Request) -> web.StreamResponse:
    state, body = await read_request(request)
    turn = _turn(state, body)
    response_id = f"resp_{state.rng.getrandbits(64):016x}"
    head = {"id": response_id, "object": "response", "created_at": int(state.wall()), "model": body["model"],
            "error": None, "instructions": body.get("instructions"), "metadata": {}, "parallel_tool_calls": True,
            "temperature": body.get("temperature", 1.0), "top_p": body.get("top_p", 1.0),
            "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or []}
    async with generation(state, turn) as gen:
        if not body.get("stream"):
            text = "".join([piece async for piece in gen.pieces()])
            return await send_whole(request, _response(head, gen, _items(gen, response_id, text)))
        return await _stream(request, gen, head, response_id)


async def _stream(request: web.Request, gen: Generation, head: dict[str, Any], response_id: str
                  ) -> web.StreamResponse:
    out = LineStream(request, sse=True)
    await out.open()
    sequence = 0

    async def send(kind: str, **fields: Any) -> None:
        nonlocal sequence
        await out.send({"type": kind, "sequence_number": sequence} | fields, kind)
        sequence += 1

    try:
        await send("response.created", response=_response(head, None, []))
        await send("response.in_progress", response=_response(head, None, []))
        text: list[str] = []
        message_id = f"msg_{response_id[5:]}"

        async def open_message() -> None:
            await send("response.output_item.added", output_index=0, item={
                "type": "message", "id": message_id, "status": "in_progress", "role": "assistant", "content": []})
            await send("response.content_part.added", item_id=message_id, output_index=0, content_index=0,
                       part={"type": "output_text", "text": "", "annotations": []})

        async for piece in gen.pieces():
            if not text:
                await open_message()
            text.append(piece)
            await send("response.output_text.delta", item_id=message_id, output_index=0, content_index=0,
                       delta=piece)
        items = _items(gen, response_id, "".join(text))
        for index, item in enumerate(items):
            if item["type"] == "message":
                if not text:
                    await open_message()
                part = item["content"][0]
                await send("response.output_text.done", item_id=message_id, output_index=0, content_index=0,
                           text=part["text"])
                await send("response.content_part.done", item_id=message_id, output_index=0, content_index=0,
                           part=part)
            elif item["type"] == "function_call":
                await send("response.output_item.added", output_index=index,
                           item=item | {"arguments": "", "status": "in_progress"})
                await send("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                           delta=item["arguments"])
                await send("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                           arguments=item["arguments"])
            await send("response.output_item.done", output_index=index, item=item)
        final = _response(head, gen, items)
        await send("response.incomplete" if final["status"] == "incomplete" else "response.completed",
                   response=final)
        return await out.finish()
    except StreamCut:
        return out.response


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/responses", responses)
