"""Anthropic Messages requests translated into native Ollama calls (`/v1/messages` → `/api/chat`), and the
native body `/v1/messages/count_tokens` counts.

Only what the client sent becomes an option, so the Modelfile's defaults hold and the context engine can
add `options.num_ctx` afterwards. Ollama cannot force a tool call: `tool_choice` `any` offers every tool,
`tool` only the named one (the nearest it gets), `none` none. Non-standard extensions a client may send
(the SDK's `extra_body`), as on the OpenAI side: `options` (a native options object; explicit Anthropic
fields win over it) and `keep_alive`. `metadata` and other unknown fields are ignored, as Ollama does.
"""

from __future__ import annotations

from typing import Any

from ollama_proxy.core.anthropic.errors import AnthropicRequestError, as_anthropic_errors
from ollama_proxy.core.anthropic.messages import history_to_native, system_to_native
from ollama_proxy.core.anthropic.stream import MessagesReply
from ollama_proxy.core.openai import fields
from ollama_proxy.core.translation import NativeCall

# thinking.type values and the native `think` each becomes; None leaves `think` out, so a thinking
# model decides by itself, which is what `adaptive` asks for.
_THINK_BY_TYPE: dict[str, bool | None] = {"enabled": True, "disabled": False, "adaptive": None}

_TOOL_CHOICES = ("auto", "any", "tool", "none")


def messages_to_native(body: Any) -> NativeCall:
    """`/v1/messages` → `/api/chat`; raises `AnthropicRequestError` naming the field it refuses."""
    with as_anthropic_errors():
        body = fields.json_object(body)
        if body.get("max_tokens") is None:
            raise AnthropicRequestError("'max_tokens' is required")
        native = _chat_body(body)
        stream = fields.boolean(body, "stream")
    native["stream"] = stream
    return NativeCall("/api/chat", native, MessagesReply(native["model"], stream=stream))


def count_tokens_to_native(body: Any) -> dict[str, Any]:
    """`/v1/messages/count_tokens`: the native chat body whose prompt the proxy counts (`max_tokens` may
    be left out, as Anthropic allows there)."""
    with as_anthropic_errors():
        return _chat_body(fields.json_object(body))


def _chat_body(body: dict[str, Any]) -> dict[str, Any]:
    native: dict[str, Any] = {"model": fields.model_name(body),
                              "messages": system_to_native(body.get("system"))
                              + history_to_native(body.get("messages"))}
    tools = _tools(body)
    if tools:
        native["tools"] = tools
    think = _think(body)
    if think is not None:
        native["think"] = think
    options = _options(body)
    if options:
        native["options"] = options
    if body.get("keep_alive") is not None:
        native["keep_alive"] = body["keep_alive"]
    return native


def _options(body: dict[str, Any]) -> dict[str, Any]:
    options = dict(fields.mapping(body, "options") or {})
    picked: dict[str, Any] = {
        "num_predict": fields.integer(body, "max_tokens", 1),
        "temperature": fields.number(body, "temperature", 0, 1),
        "top_p": fields.number(body, "top_p", 0, 1),
        "top_k": fields.integer(body, "top_k", 0),
        "stop": _stop_sequences(body),
    }
    options.update({key: value for key, value in picked.items() if value is not None})
    return options


def _stop_sequences(body: dict[str, Any]) -> list[str] | None:
    value = body.get("stop_sequences")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise AnthropicRequestError("'stop_sequences' must be a list of strings")
    # An empty list would replace the Modelfile's stop words with none.
    return list(value) or None


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise AnthropicRequestError("'tools' must be a list")
    native = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    choice = body.get("tool_choice")
    if choice is None:
        return native
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in _TOOL_CHOICES:
        raise AnthropicRequestError(f"'tool_choice' must be an object whose type is one of "
                                    f"{', '.join(_TOOL_CHOICES)}, got {choice!r}")
    if kind == "none":
        return []
    if kind == "tool":
        name = choice.get("name")
        chosen = [tool for tool in native if tool["function"]["name"] == name]
        if not chosen:
            raise AnthropicRequestError(f"'tool_choice' names {name!r}, which is not in 'tools'")
        return chosen
    return native


def _tool(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise AnthropicRequestError(f"{where} must be an object")
    kind = tool.get("type")
    if kind not in (None, "custom"):
        raise AnthropicRequestError(f"{where}: server tool {kind!r} is not supported (only client tools "
                                    "with 'name' and 'input_schema')")
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise AnthropicRequestError(f"{where}.name must be a non-empty string")
    schema = tool.get("input_schema")
    if not isinstance(schema, dict):
        raise AnthropicRequestError(f"{where}.input_schema must be a JSON schema object")
    function: dict[str, Any] = {"name": name}
    description = tool.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise AnthropicRequestError(f"{where}.description must be a string")
        function["description"] = description
    function["parameters"] = schema
    return {"type": "function", "function": function}


def _think(body: dict[str, Any]) -> bool | None:
    thinking = body.get("thinking")
    if thinking is None:
        return None
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if not isinstance(thinking, dict) or not isinstance(kind, str) or kind not in _THINK_BY_TYPE:
        raise AnthropicRequestError(f"'thinking' must be an object whose type is one of "
                                    f"{', '.join(_THINK_BY_TYPE)}, got {thinking!r}")
    # Ollama has no thinking budget; the field is still checked, as Anthropic would.
    budget = thinking.get("budget_tokens")
    if kind == "enabled" and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise AnthropicRequestError(f"'thinking.budget_tokens' must be a positive integer, got {budget!r}")
    return _THINK_BY_TYPE[kind]
