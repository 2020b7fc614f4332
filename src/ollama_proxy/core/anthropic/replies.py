"""Native `/api/chat` replies as Anthropic Message objects, and the pieces a stream shares with them:
ids, content blocks, the stop reason and usage.

Ids are derived from the message id (`new_message_id(rng)` makes one), so every function here is
deterministic. Streams are in `stream.py`; nothing here knows about HTTP.
"""

from __future__ import annotations

import random
from typing import Any

from ollama_proxy.core.anthropic.errors import anthropic_error
from ollama_proxy.core.openai.messages import parse_arguments
from ollama_proxy.core.openai.responses import error_from_native as openai_error_from_native

# Ollama's thinking carries no signature; the SDK's block wants the field, and an empty one says "none".
NO_SIGNATURE = ""


def new_message_id(rng: random.Random) -> str:
    """A fresh message id such as `msg_3f9a...` (96 random bits)."""
    return f"msg_{rng.getrandbits(96):024x}"


def tool_use_id(message_id: str, index: int) -> str:
    """The id of a message's `index`th tool call. Native calls may have no id (older Ollama versions do
    not make one), and the id only has to match the `tool_result` the client sends back, which is
    resolved against the history's own tool_use blocks."""
    return f"toolu_{message_id.removeprefix('msg_')}_{index}"


def stop_reason(done_reason: Any, has_tool_calls: bool) -> str:
    """`tool_use` whenever the model called tools (Ollama reports only complete calls, and that is what
    clients test to run them), `max_tokens` for native `length`, else `end_turn`: Ollama says `stop`
    for a stop sequence too, so `stop_sequence` cannot be told apart."""
    if has_tool_calls:
        return "tool_use"
    return "max_tokens" if done_reason == "length" else "end_turn"


def usage(native: dict[str, Any]) -> dict[str, int]:
    """Anthropic usage from native counts; Ollama omits zero counts, so absent means 0."""
    return {"input_tokens": _count(native.get("prompt_eval_count")),
            "output_tokens": _count(native.get("eval_count"))}


def reply_parts(native: dict[str, Any]) -> tuple[str, str, list[dict[str, Any]]]:
    """The thinking, the text and the tool calls of a native reply or stream line. A field of the wrong
    type counts as absent, so an odd backend cannot break a stream half-way."""
    reply = native.get("message")
    if not isinstance(reply, dict):
        return "", "", []
    calls = reply.get("tool_calls")
    return (_text(reply.get("thinking")), _text(reply.get("content")),
            [call for call in calls if isinstance(call, dict)] if isinstance(calls, list) else [])


def tool_input(call: dict[str, Any]) -> dict[str, Any]:
    """A native tool call's arguments as the object Anthropic's `input` is ({} when there is none)."""
    return parse_arguments(_function(call).get("arguments")) or {}


def tool_use_block(call: dict[str, Any], block_id: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": block_id, "name": _text(_function(call).get("name")), "input": arguments}


def message_from_native(native: dict[str, Any], *, model: str, message_id: str) -> dict[str, Any]:
    """A native `/api/chat` reply (`stream: false`) as a Message: thinking, text, then tool_use blocks.

    A reply with nothing in it still gets an empty text block, as clients read `content[0].text`.
    """
    thinking, text, calls = reply_parts(native)
    content: list[dict[str, Any]] = []
    if thinking:
        content.append({"type": "thinking", "thinking": thinking, "signature": NO_SIGNATURE})
    if text or not (content or calls):
        content.append({"type": "text", "text": text})
    content.extend(tool_use_block(call, tool_use_id(message_id, k), tool_input(call))
                   for k, call in enumerate(calls))
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason(native.get("done_reason"), bool(calls)), "stop_sequence": None,
            "usage": usage(native)}


def error_from_native(status: int, native: Any) -> tuple[int, dict[str, Any]]:
    """A native error reply (`{"error": "..."}`, any status) as an Anthropic error, status kept; the
    message is read as the OpenAI translation reads it."""
    status, body = openai_error_from_native(status, native)
    return status, anthropic_error(body["error"]["message"], status)


def _function(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function")
    return function if isinstance(function, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
