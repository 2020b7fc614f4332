"""OpenAI's Responses API (`POST /v1/responses`) as a native `/api/chat` call, and the native reply as a
Response object.

The proxy keeps no state, so only the stateless half of the API is served: the client sends the whole
conversation in `input` each time (earlier outputs included) and nothing is stored. A request that needs
stored responses (`previous_response_id`, `conversation`, `store: true`, `background: true`, an
`item_reference`) is refused with a 400 that says so and what to send instead. The sampling fields, the
`options`/`keep_alive`/`think` extensions and the reasoning effort read as in chat completions
(`requests`). The stream's events are in `responses_events`; nothing here knows about HTTP.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from ollama_proxy.core.openai import fields
from ollama_proxy.core.openai.errors import OpenAIRequestError
from ollama_proxy.core.openai.messages import (
    image_to_base64,
    parse_arguments,
    tool_call_to_native,
    tool_call_to_openai,
)
from ollama_proxy.core.openai.requests import native_options, native_think
from ollama_proxy.core.openai.responses import usage
from ollama_proxy.core.translation import NativeCall, ReplyTranslator

_STATELESS = "the proxy is stateless and stores no responses"

# Request fields that need state the proxy does not keep, and what the client should do instead.
_STATEFUL_FIELDS = {
    "previous_response_id": "send the whole conversation in 'input' (earlier output items included) instead",
    "conversation": "send the whole conversation in 'input' instead",
    "prompt": "send the prompt's text as 'instructions' and 'input' instead",
}

_ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}


@dataclass(frozen=True, slots=True)
class ResponsesContext:
    """What the reply needs of its request (a `Translation`): the model, whether to stream, and the request
    fields a Response object repeats (`echo`: instructions, tools, tool_choice, text, reasoning, ...)."""

    model: str
    stream: bool
    echo: dict[str, Any]

    def translator(self, *, rng: random.Random, now: float) -> ReplyTranslator:
        # Imported here: the translator module needs this one's shapes, and this method needs the translator.
        from ollama_proxy.core.openai.responses_events import ResponsesTranslator

        return ResponsesTranslator(self, rng=rng, now=now)


def responses_to_native(body: Any) -> NativeCall:
    """`/v1/responses` → `/api/chat`; raises `OpenAIRequestError` for what cannot be served."""
    body = fields.json_object(body)
    _refuse_stateful(body)
    model = fields.model_name(body)
    stream = fields.boolean(body, "stream")
    instructions = fields.string(body, "instructions")
    messages = [{"role": "system", "content": instructions}] if instructions else []
    messages += input_to_native(body.get("input"))
    native: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    tools, offered = _tools(body)
    if offered:
        native["tools"] = offered
    fmt, text = _text_format(body)
    if fmt is not None:
        native["format"] = fmt
    reasoning = fields.mapping(body, "reasoning")
    think = native_think(body)
    if think is not None:
        native["think"] = think
    options = native_options(body)
    budget = fields.integer(body, "max_output_tokens", 1)
    if budget is not None:
        options["num_predict"] = budget
    if options:
        native["options"] = options
    if body.get("keep_alive") is not None:
        native["keep_alive"] = body["keep_alive"]
    truncation = fields.string(body, "truncation") or "disabled"
    if truncation not in ("auto", "disabled"):
        raise OpenAIRequestError(f"'truncation' must be 'auto' or 'disabled', got {truncation!r}",
                                 param="truncation")
    echo = {"instructions": instructions, "tools": tools, "tool_choice": body.get("tool_choice") or "auto",
            "parallel_tool_calls": fields.boolean(body, "parallel_tool_calls", True),
            "temperature": options.get("temperature"), "top_p": options.get("top_p"), "max_output_tokens": budget,
            "metadata": fields.mapping(body, "metadata") or {}, "user": fields.string(body, "user"),
            "truncation": truncation, "text": text, "store": False, "background": False,
            "previous_response_id": None,
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
            if reasoning else None}
    return NativeCall("/api/chat", native, ResponsesContext(model, stream, echo))


def _refuse_stateful(body: dict[str, Any]) -> None:
    for key, instead in _STATEFUL_FIELDS.items():
        if body.get(key) is not None:
            raise OpenAIRequestError(f"'{key}' cannot be used: {_STATELESS}; {instead}", param=key)
    if fields.boolean(body, "store"):
        raise OpenAIRequestError(f"'store' must be false: {_STATELESS}; send store: false (or leave it out) "
                                 "and keep the conversation on the client", param="store")
    if fields.boolean(body, "background"):
        raise OpenAIRequestError(f"'background' must be false: {_STATELESS}, so a background response could "
                                 "never be fetched; stream the response instead (stream: true)", param="background")


def input_to_native(items: Any) -> list[dict[str, Any]]:
    """Responses `input` (a string, or a list of message, function_call, function_call_output and reasoning
    items) as native `/api/chat` messages."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise OpenAIRequestError("'input' is required and must be a string or a non-empty list of items",
                                 param="input")
    names_by_call_id: dict[str, str] = {}
    native: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise OpenAIRequestError(f"{where} must be an object", param=where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            native.append(_message(item, where))
        elif kind == "function_call":
            _add_function_call(item, where, native, names_by_call_id)
        elif kind == "function_call_output":
            native.append(_function_output(item, where, names_by_call_id))
        elif kind == "item_reference":
            raise OpenAIRequestError(f"{where}: item references cannot be used: {_STATELESS}; send the item "
                                     "itself", param=where)
        elif kind != "reasoning":  # an earlier turn's thinking: Ollama's chat templates leave it out too
            raise OpenAIRequestError(f"{where}: unsupported input item {kind!r} (supported: message, "
                                     "function_call, function_call_output, reasoning)", param=where)
    if not native:
        raise OpenAIRequestError("'input' holds no message", param="input")
    return native


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    given = item.get("role")
    role = _ROLES.get(given) if isinstance(given, str) else None
    if role is None:
        raise OpenAIRequestError(f"{where}.role must be one of {', '.join(_ROLES)}, got {given!r}",
                                 param=f"{where}.role")
    text, images = _content(item.get("content"), f"{where}.content")
    out: dict[str, Any] = {"role": role, "content": text}
    if images:
        out["images"] = images
    return out


def _content(content: Any, where: str) -> tuple[str, list[str]]:
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise OpenAIRequestError(f"{where} must be a string or a list of content parts", param=where)
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        part_where = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif kind == "input_image" and part.get("image_url") is None and part.get("file_id") is not None:
            raise OpenAIRequestError(f"{part_where}: file ids need OpenAI's Files API, which the proxy does not "
                                     "have; send the image inline as a data URI in 'image_url'", param=part_where)
        elif kind == "input_image":
            images.append(image_to_base64(part.get("image_url"), part_where))
        else:
            raise OpenAIRequestError(f"{part_where}: unsupported content part {kind!r} (supported: input_text, "
                                     "output_text, refusal, input_image)", param=part_where)
    # Parts are pieces of one message; a newline keeps paragraphs apart without inventing text.
    return "\n".join(texts), images


def _add_function_call(item: dict[str, Any], where: str, native: list[dict[str, Any]],
                       names_by_call_id: dict[str, str]) -> None:
    """A function_call item joins the assistant message before it (its text and its calls are one turn)."""
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise OpenAIRequestError(f"{where}: a function_call item needs 'call_id' and 'name'", param=where)
    arguments = parse_arguments(item.get("arguments"))
    if arguments is None:
        raise OpenAIRequestError(f"{where}.arguments must be a JSON string holding an object",
                                 param=f"{where}.arguments")
    names_by_call_id[call_id] = name
    if not native or native[-1]["role"] != "assistant":
        native.append({"role": "assistant", "content": ""})
    calls = native[-1].setdefault("tool_calls", [])
    calls.append(tool_call_to_native({"id": call_id, "function": {"name": name}}, len(calls), arguments))


def _function_output(item: dict[str, Any], where: str, names_by_call_id: dict[str, str]) -> dict[str, Any]:
    call_id = item.get("call_id")
    name = names_by_call_id.get(call_id) if isinstance(call_id, str) else None
    if name is None:
        # OpenAI refuses an orphan output too; here the call can only have come in this same input.
        raise OpenAIRequestError(f"{where}: no function_call item with call_id {call_id!r} comes before it; "
                                 f"{_STATELESS}, so send the function_call items along with their outputs",
                                 param=f"{where}.call_id")
    text, images = _content(item.get("output"), f"{where}.output")
    out: dict[str, Any] = {"role": "tool", "content": text, "tool_name": name, "tool_call_id": call_id}
    if images:
        out["images"] = images
    return out


def _tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The tools as a Response repeats them, and the native tools `tool_choice` leaves on offer."""
    tools = body.get("tools")
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise OpenAIRequestError("'tools' must be a list", param="tools")
    echoed = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise OpenAIRequestError(f"tools[{i}]: {kind!r} tools are not supported: Ollama runs no hosted tools "
                                     "(web search, file search, code interpreter, ...); only function tools "
                                     "{'type': 'function', 'name': ..., 'parameters': ...}", param=f"tools[{i}]")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise OpenAIRequestError(f"tools[{i}].name is required", param=f"tools[{i}].name")
        echoed.append({"type": "function", "name": tool["name"], "description": tool.get("description"),
                       "parameters": tool.get("parameters"), "strict": tool.get("strict")})
    return echoed, [_native_tool(tool) for tool in _chosen(echoed, body.get("tool_choice"))]


def _chosen(tools: list[dict[str, Any]], choice: Any) -> list[dict[str, Any]]:
    if choice in (None, "auto", "required"):
        return tools
    if choice == "none":
        return []
    kind = choice.get("type") if isinstance(choice, dict) else None
    # Ollama cannot force a call; offering only the chosen tools is the nearest it gets.
    if kind == "function":
        names = {choice.get("name")}
    elif kind == "allowed_tools" and isinstance(choice.get("tools"), list):
        names = {allowed.get("name") for allowed in choice["tools"] if isinstance(allowed, dict)}
    else:
        raise OpenAIRequestError("'tool_choice' must be 'none', 'auto', 'required', {'type': 'function', "
                                 "'name': ...} or {'type': 'allowed_tools', 'tools': [...]}", param="tool_choice")
    chosen = [tool for tool in tools if tool["name"] in names]
    if not chosen:
        raise OpenAIRequestError(f"tool_choice names {sorted(map(str, names))}, which are not in 'tools'",
                                 param="tool_choice")
    return chosen


def _native_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = {key: tool[key] for key in ("name", "description", "parameters") if tool[key] is not None}
    return {"type": "function", "function": function}


def _text_format(body: dict[str, Any]) -> tuple[str | dict[str, Any] | None, dict[str, Any]]:
    """The native `format` for `text.format`, and the `text` config a Response repeats."""
    text = fields.mapping(body, "text") or {}
    fmt = fields.mapping(text, "format") or {"type": "text"}
    kind = fmt.get("type")
    if kind == "text":
        return None, {**text, "format": fmt}
    if kind == "json_object":
        return "json", {**text, "format": fmt}
    if kind == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise OpenAIRequestError("text.format.schema must be a JSON schema object", param="text.format")
        # OpenAI requires a name; Ollama has no use for one, so a missing name is not worth a refusal.
        return fmt["schema"], {**text, "format": {"name": "response", **fmt}}
    raise OpenAIRequestError(f"text.format.type must be text, json_object or json_schema, got {kind!r}",
                             param="text.format")


def new_id(prefix: str, rng: random.Random) -> str:
    """A fresh id such as `resp_3f9a...` (128 random bits)."""
    return f"{prefix}_{rng.getrandbits(128):032x}"


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def summary_text(text: str) -> dict[str, Any]:
    return {"type": "summary_text", "text": text}


def message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    """An assistant message output item; `text` None while it has no content part yet."""
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [] if text is None else [output_text(text)]}


def reasoning_item(item_id: str, text: str | None) -> dict[str, Any]:
    """A reasoning output item with the thinking as its summary; `text` None while it has none yet."""
    return {"type": "reasoning", "id": item_id, "status": "in_progress" if text is None else "completed",
            "summary": [] if text is None else [summary_text(text)]}


def function_call_item(item_id: str, call: dict[str, Any], status: str, *, arguments: str | None = None
                       ) -> dict[str, Any]:
    """A function_call output item for an OpenAI-shaped tool call (`messages.tool_call_to_openai`)."""
    function = call["function"]
    return {"type": "function_call", "id": item_id, "call_id": call["id"], "name": function["name"],
            "arguments": function["arguments"] if arguments is None else arguments, "status": status}


def response_usage(native: dict[str, Any]) -> dict[str, Any]:
    counts = usage(native)
    return {"input_tokens": counts["prompt_tokens"], "output_tokens": counts["completion_tokens"],
            "total_tokens": counts["total_tokens"],
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}


def response_object(context: ResponsesContext, response_id: str, created_at: int, status: str,
                    output: list[dict[str, Any]], *, native: dict[str, Any] | None = None,
                    error: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Response object; `native` is the final native line or reply, which gives the usage."""
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {"id": response_id, "object": "response", "created_at": created_at, "status": status,
            "model": context.model, "output": output, "error": error, "incomplete_details": incomplete,
            "usage": None if native is None else response_usage(native), **context.echo}


def end_status(native: dict[str, Any]) -> str:
    """`incomplete` when the reply ran out of tokens (`max_output_tokens` or `num_ctx`), else `completed`."""
    return "incomplete" if native.get("done_reason") == "length" else "completed"


def response_from_native(native: dict[str, Any], context: ResponsesContext, *, response_id: str,
                         created_at: int, rng: random.Random) -> dict[str, Any]:
    """A native `/api/chat` reply (`stream: false`) as a Response: reasoning, message, function calls."""
    message = native.get("message") or {}
    status = end_status(native)
    output = []
    if message.get("thinking"):
        output.append(reasoning_item(new_id("rs", rng), message["thinking"]))
    calls = message.get("tool_calls") or []
    text = message.get("content") or ""
    if text or not calls:
        # Only the reply's last item can have been cut short; tool calls come after the text.
        output.append(message_item(new_id("msg", rng), text, "completed" if calls else status))
    output += [function_call_item(new_id("fc", rng), tool_call_to_openai(call, new_id("call", rng)), "completed")
               for call in calls]
    return response_object(context, response_id, created_at, status, output, native=native)
