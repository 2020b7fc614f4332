"""Anthropic system prompts and message history as native `/api/chat` messages.

The differences this module absorbs: Anthropic content is a string or a list of typed blocks, Ollama's
one string plus plain-base64 `images`; a tool call is a `tool_use` block inside the assistant turn
(Ollama: `tool_calls`, the block's `input` as `arguments`), and its answer a `tool_result` block inside
the next user turn (Ollama: a message of its own, `role: "tool"`, naming the tool, which Anthropic
leaves to the call's id). Nothing here knows about options or streams.
"""

from __future__ import annotations

from itertools import groupby
from typing import Any

from ollama_proxy.core.anthropic.errors import AnthropicRequestError

# Ollama has no flag for a failed tool call; the model has to read it from the result itself.
TOOL_ERROR_PREFIX = "Error: "


def system_to_native(system: Any) -> list[dict[str, Any]]:
    """The `system` prompt (a string or a list of text blocks) as a native system message, if any."""
    if system is None:
        return []
    if isinstance(system, str):
        text = system
    elif isinstance(system, list):
        text, _ = _text_and_images(enumerate(system), "system", allowed=("text",))
    else:
        raise AnthropicRequestError("'system' must be a string or a list of text blocks")
    return [{"role": "system", "content": text}] if text else []


def history_to_native(messages: Any) -> list[dict[str, Any]]:
    """Anthropic `messages` as native ones; raises `AnthropicRequestError` naming the offending field."""
    if not isinstance(messages, list) or not messages:
        raise AnthropicRequestError("'messages' is required and must be a non-empty list")
    names_by_call_id: dict[str, str] = {}
    native: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise AnthropicRequestError(f"{where} must be an object")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise AnthropicRequestError(f"{where}.role must be 'user' or 'assistant', got {role!r}")
        blocks = _blocks(message.get("content"), f"{where}.content")
        if role == "user":
            native.extend(_user_turn(blocks, f"{where}.content", names_by_call_id))
        else:
            native.append(_assistant_turn(blocks, f"{where}.content", names_by_call_id))
    return native


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise AnthropicRequestError(f"{where} must be a string or a list of content blocks")
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise AnthropicRequestError(f"{where}[{j}] must be a content block with a 'type'")
    return content


def _user_turn(blocks: list[dict[str, Any]], where: str,
               names_by_call_id: dict[str, str]) -> list[dict[str, Any]]:
    """One user turn: each tool result a native tool message, each run of other blocks one user message,
    in the order the client gave them."""
    native: list[dict[str, Any]] = []
    for is_result, run in groupby(enumerate(blocks), key=lambda item: item[1]["type"] == "tool_result"):
        if is_result:
            native.extend(_tool_result(block, f"{where}[{j}]", names_by_call_id) for j, block in run)
            continue
        text, images = _text_and_images(run, where, allowed=("text", "image"))
        message: dict[str, Any] = {"role": "user", "content": text}
        if images:
            message["images"] = images
        native.append(message)
    return native


def _assistant_turn(blocks: list[dict[str, Any]], where: str,
                    names_by_call_id: dict[str, str]) -> dict[str, Any]:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        block_where = f"{where}[{j}]"
        kind = block["type"]
        if kind == "text":
            texts.append(_string(block, "text", block_where))
        elif kind == "thinking":
            thoughts.append(_string(block, "thinking", block_where))
        elif kind == "redacted_thinking":
            continue  # encrypted by Anthropic: nothing a local model could read
        elif kind == "tool_use":
            calls.append(_tool_call(block, block_where, len(calls), names_by_call_id))
        else:
            raise AnthropicRequestError(f"{block_where}: unsupported content block {kind!r} in an assistant "
                                        "turn (supported: text, thinking, redacted_thinking, tool_use)")
    # Blocks are pieces of one turn; a newline keeps paragraphs apart without inventing text.
    message: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts)}
    if any(thoughts):
        message["thinking"] = "\n".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_call(block: dict[str, Any], where: str, index: int,
               names_by_call_id: dict[str, str]) -> dict[str, Any]:
    call_id = _string(block, "id", where)
    name = _string(block, "name", where)
    arguments = block.get("input")
    if not isinstance(arguments, dict):
        raise AnthropicRequestError(f"{where}.input must be an object")
    names_by_call_id[call_id] = name
    return {"id": call_id, "function": {"index": index, "name": name, "arguments": arguments}}


def _tool_result(block: dict[str, Any], where: str, names_by_call_id: dict[str, str]) -> dict[str, Any]:
    call_id = _string(block, "tool_use_id", where)
    name = names_by_call_id.get(call_id)
    if name is None:
        raise AnthropicRequestError(f"{where}.tool_use_id {call_id!r} answers no earlier tool_use block")
    content = block.get("content")
    blocks = [] if content is None else _blocks(content, f"{where}.content")
    text, images = _text_and_images(enumerate(blocks), f"{where}.content", allowed=("text", "image"))
    if block.get("is_error") is True:
        text = TOOL_ERROR_PREFIX + text
    message: dict[str, Any] = {"role": "tool", "tool_name": name, "tool_call_id": call_id, "content": text}
    if images:
        message["images"] = images
    return message


def _text_and_images(blocks: Any, where: str, *, allowed: tuple[str, ...]) -> tuple[str, list[str]]:
    """The text (joined by newlines) and the base64 images of `(index, block)` pairs."""
    texts: list[str] = []
    images: list[str] = []
    for j, block in blocks:
        block_where = f"{where}[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in allowed:
            raise AnthropicRequestError(f"{block_where}: unsupported content block {kind!r} "
                                        f"(supported here: {', '.join(allowed)})")
        if kind == "text":
            texts.append(_string(block, "text", block_where))
        else:
            images.append(_image_data(block.get("source"), f"{block_where}.source"))
    return "\n".join(texts), images


def _image_data(source: Any, where: str) -> str:
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source, dict):
        data = source.get("data")
        if isinstance(data, str) and data:
            return data
        raise AnthropicRequestError(f"{where}.data must be a non-empty base64 string")
    if kind in ("url", "file"):
        raise AnthropicRequestError(f"{where}: {kind} image sources are not supported (the proxy talks only "
                                    "to its configured backends); send the image inline as "
                                    "{'type': 'base64', 'media_type': ..., 'data': ...}")
    raise AnthropicRequestError(f"{where} must be an image source of type 'base64', got {kind!r}")


def _string(block: dict[str, Any], key: str, where: str) -> str:
    value = block.get(key)
    if not isinstance(value, str):
        raise AnthropicRequestError(f"{where}.{key} must be a string")
    return value
