"""Chat messages and tool calls in both shapes: OpenAI's and Ollama's native `/api/chat`.

The differences this module absorbs: OpenAI content may be a list of parts with images as data
URIs, Ollama wants one string plus plain-base64 `images`; OpenAI tool-call arguments are a JSON
*string*, Ollama's a JSON *object*; OpenAI tool results carry `tool_call_id` (and maybe `name`),
Ollama's carry `tool_name`. Nothing here knows about endpoints, options or streams.
"""

from __future__ import annotations

from typing import Any

import orjson

from ollama_proxy.core.openai.errors import OpenAIRequestError

# OpenAI's "developer" role is the newer name for "system"; "function" is the pre-tools name of "tool".
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
          "tool": "tool", "function": "tool"}

# First bytes of base64-encoded image files, to label inline images for OpenAI-type backends.
_IMAGE_MAGIC = (("iVBORw0KGgo", "image/png"), ("/9j/", "image/jpeg"), ("UklGR", "image/webp"),
                ("R0lGOD", "image/gif"))


def parse_arguments(text: Any) -> dict[str, Any] | None:
    """Tool-call arguments from OpenAI's JSON string; None unless it holds a JSON object.

    An empty string counts as `{}`: some clients send it for a call without parameters.
    """
    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        return None
    if not text.strip():
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def tool_call_to_openai(call: dict[str, Any], fallback_id: str) -> dict[str, Any]:
    """A native tool call as OpenAI's `{"id", "type", "function": {"name", "arguments": "<json>"}}`."""
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = orjson.dumps(arguments if arguments is not None else {}).decode()
    return {"id": call.get("id") or fallback_id, "type": "function",
            "function": {"name": function.get("name", ""), "arguments": arguments}}


def tool_call_to_native(call: dict[str, Any], index: int, arguments: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI tool call as native, with its arguments already parsed into an object."""
    native: dict[str, Any] = {"function": {"index": index, "name": call.get("function", {}).get("name", ""),
                                           "arguments": arguments}}
    if call.get("id"):
        native["id"] = call["id"]
    return native


def messages_to_native(messages: Any) -> list[dict[str, Any]]:
    """OpenAI chat messages as native `/api/chat` messages; raises `OpenAIRequestError` when invalid."""
    if not isinstance(messages, list) or not messages:
        raise OpenAIRequestError("'messages' is required and must be a non-empty list", param="messages")
    names_by_call_id: dict[str, str] = {}
    native = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise OpenAIRequestError(f"{where} must be an object", param=where)
        given = message.get("role")
        # Only a string can name a role (a list or an object is not hashable, let alone a role).
        role = _ROLES.get(given) if isinstance(given, str) else None
        if role is None:
            raise OpenAIRequestError(f"{where}.role must be one of {', '.join(_ROLES)}, "
                                     f"got {message.get('role')!r}", param=f"{where}.role")
        out: dict[str, Any] = {"role": role}
        tool_calls = message.get("tool_calls") if role == "assistant" else None
        text, images = _content_to_native(message.get("content"), where,
                                          optional=role == "assistant")
        out["content"] = text
        if images:
            out["images"] = images
        if role == "assistant":
            thinking = message.get("reasoning") or message.get("reasoning_content")
            if isinstance(thinking, str) and thinking:
                out["thinking"] = thinking
            if tool_calls:
                out["tool_calls"] = _tool_calls_to_native(tool_calls, where, names_by_call_id)
        if role == "tool":
            _tool_result_fields(message, out, names_by_call_id)
        native.append(out)
    return native


def _content_to_native(content: Any, where: str, *, optional: bool) -> tuple[str, list[str]]:
    if isinstance(content, str):
        return content, []
    if content is None:
        if optional:
            return "", []
        raise OpenAIRequestError(f"{where}.content is required", param=f"{where}.content")
    if not isinstance(content, list):
        raise OpenAIRequestError(f"{where}.content must be a string or a list of content parts",
                                 param=f"{where}.content")
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        part_where = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif kind == "image_url":
            images.append(image_to_base64(part.get("image_url"), part_where))
        else:
            raise OpenAIRequestError(f"{part_where}: unsupported content part {kind!r} "
                                     "(supported: text, image_url)", param=part_where)
    # Parts are pieces of one message; a newline keeps paragraphs apart without inventing text.
    return "\n".join(texts), images


def image_to_base64(image: Any, where: str) -> str:
    """The base64 data of an inline image (a data URI, alone or as `{"url": ...}`); image URLs are refused."""
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise OpenAIRequestError(f"{where}.image_url.url is required", param=where)
    if url.startswith(("http://", "https://")):
        raise OpenAIRequestError(f"{where}: image URLs are not supported; send the image inline as "
                                 "a base64 data URI (data:image/png;base64,...)", param=where)
    header, comma, data = url.partition(",")
    if not (header.startswith("data:") and header.endswith(";base64") and comma and data):
        raise OpenAIRequestError(f"{where}: expected a base64 data URI such as "
                                 f"data:image/png;base64,..., got {url[:40]!r}", param=where)
    return data


def _tool_calls_to_native(tool_calls: Any, where: str,
                          names_by_call_id: dict[str, str]) -> list[dict[str, Any]]:
    if not isinstance(tool_calls, list):
        raise OpenAIRequestError(f"{where}.tool_calls must be a list", param=f"{where}.tool_calls")
    native = []
    for k, call in enumerate(tool_calls):
        call_where = f"{where}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise OpenAIRequestError(f"{call_where}.function.name is required", param=call_where)
        arguments = parse_arguments(function.get("arguments"))
        if arguments is None:
            raise OpenAIRequestError(f"{call_where}.function.arguments must be a JSON string holding "
                                     "an object", param=f"{call_where}.function.arguments")
        if isinstance(call.get("id"), str):
            names_by_call_id[call["id"]] = function["name"]
        native.append(tool_call_to_native(call, k, arguments))
    return native


def _tool_result_fields(message: dict[str, Any], out: dict[str, Any],
                        names_by_call_id: dict[str, str]) -> None:
    call_id = message.get("tool_call_id")
    if isinstance(call_id, str) and call_id:
        out["tool_call_id"] = call_id
    # Ollama templates show the tool's name; OpenAI clients often send only the call id.
    name = message.get("name") or names_by_call_id.get(call_id or "")
    if isinstance(name, str) and name:
        out["tool_name"] = name


def messages_to_openai(messages: Any) -> list[dict[str, Any]]:
    """Native `/api/chat` messages as OpenAI messages, for OpenAI-type backends.

    Native tool calls may lack ids and native tool results may carry only `tool_name`, while
    OpenAI servers (vLLM, llama.cpp) require the pair to match by id; missing ids are made up
    and each result is matched to the earliest unanswered call of the same name.
    """
    if not isinstance(messages, list):
        raise OpenAIRequestError("'messages' must be a list", param="messages")
    open_calls: list[tuple[str, str]] = []
    converted = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise OpenAIRequestError(f"messages[{i}] must be an object", param=f"messages[{i}]")
        role = str(message.get("role", "user")).lower()
        out: dict[str, Any] = {"role": role, "content": _content_to_openai(message)}
        if role == "assistant" and message.get("tool_calls"):
            calls = [tool_call_to_openai(call, f"call_{i}_{k}")
                     for k, call in enumerate(message["tool_calls"])]
            out["tool_calls"] = calls
            open_calls.extend((call["id"], call["function"]["name"]) for call in calls)
        if role == "tool":
            name = message.get("tool_name") or ""
            call_id = message.get("tool_call_id") or _answer_call(open_calls, name)
            if call_id:
                out["tool_call_id"] = call_id
            if name:
                out["name"] = name
        converted.append(out)
    return converted


def _content_to_openai(message: dict[str, Any]) -> str | list[dict[str, Any]]:
    text = message.get("content") or ""
    images = message.get("images") or []
    if not images:
        return text
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts.extend({"type": "image_url", "image_url": {"url": f"data:{_image_mime(b64)};base64,{b64}"}}
                 for b64 in images)
    return parts


def _image_mime(b64: str) -> str:
    return next((mime for magic, mime in _IMAGE_MAGIC if b64.startswith(magic)), "image/png")


def _answer_call(open_calls: list[tuple[str, str]], name: str) -> str | None:
    for n, (call_id, call_name) in enumerate(open_calls):
        if not name or call_name == name:
            del open_calls[n]
            return call_id
    return None
