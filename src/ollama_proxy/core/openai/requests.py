"""OpenAI requests translated into native Ollama calls (`/v1/chat/completions` → `/api/chat`, ...).

Why not let Ollama's own `/v1` layer do it: that layer drops `num_ctx` and every other option,
sends `temperature`/`top_p` 1.0 when the client left them out (overriding the Modelfile), and
ignores `max_completion_tokens` (reference 6.1, 6.6). Here only what the client sent becomes an
option, so the context engine can add `options.num_ctx` to the native body afterwards.

Non-standard extensions a client may send (e.g. the SDK's `extra_body`): `options` (a native
options object, e.g. `{"num_ctx": 8192}`; explicit OpenAI fields win over it), `keep_alive`, and
`think` (native form, when `reasoning_effort` is absent). Nothing here knows about HTTP.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ollama_proxy.core.openai import fields
from ollama_proxy.core.openai.errors import OpenAIRequestError
from ollama_proxy.core.openai.messages import messages_to_native
from ollama_proxy.core.translation import NativeCall, ReplyTranslator


class RequestKind(StrEnum):
    CHAT = "chat"
    COMPLETION = "completion"
    EMBEDDING = "embedding"


@dataclass(frozen=True, slots=True)
class ReplyContext:
    """What the reply translation needs to know about the request it answers (a `Translation`)."""

    kind: RequestKind
    model: str
    stream: bool = False
    include_usage: bool = False
    encoding_format: str = "float"

    def translator(self, *, rng: random.Random, now: float) -> ReplyTranslator:
        # Imported here: the translator module needs this class, and this method needs the translator.
        from ollama_proxy.core.openai.stream import StreamTranslator

        return StreamTranslator.start(self, rng=rng, now=now)


# reasoning_effort values and the native `think` each becomes (reference 6.1, 3.7).
_THINK_BY_EFFORT: dict[str, bool | str] = {"none": False, "minimal": "low", "low": "low",
                                           "medium": "medium", "high": "high", "xhigh": "max",
                                           "max": "max", "ultra": "max"}


def chat_to_native(body: Any) -> NativeCall:
    """`/v1/chat/completions` → `/api/chat`."""
    body = fields.json_object(body)
    model = fields.model_name(body)
    stream = fields.boolean(body, "stream")
    native: dict[str, Any] = {"model": model, "messages": messages_to_native(body.get("messages")),
                              "stream": stream}
    tools = _tools(body)
    if tools:
        native["tools"] = tools
    fmt = _format(body)
    if fmt is not None:
        native["format"] = fmt
    think = native_think(body)
    if think is not None:
        native["think"] = think
    if fields.boolean(body, "logprobs"):
        native["logprobs"] = True
        top = fields.integer(body, "top_logprobs", 0)
        if top:
            native["top_logprobs"] = top
    _finish(body, native)
    return NativeCall("/api/chat", native, _context(RequestKind.CHAT, model, body, stream))


def completion_to_native(body: Any) -> NativeCall:
    """`/v1/completions` → `/api/generate`; like Ollama's own layer, the prompt is templated unless
    the client sends the extension `raw: true`."""
    body = fields.json_object(body)
    model = fields.model_name(body)
    stream = fields.boolean(body, "stream")
    if fields.boolean(body, "echo"):
        raise OpenAIRequestError("'echo' is not supported", param="echo")
    native: dict[str, Any] = {"model": model, "prompt": _prompt(body.get("prompt")), "stream": stream}
    suffix = fields.string(body, "suffix")
    if suffix:
        native["suffix"] = suffix
    if fields.boolean(body, "raw"):
        native["raw"] = True
    _finish(body, native)
    return NativeCall("/api/generate", native, _context(RequestKind.COMPLETION, model, body, stream))


def embeddings_to_native(body: Any) -> NativeCall:
    """`/v1/embeddings` → `/api/embed`."""
    body = fields.json_object(body)
    model = fields.model_name(body)
    native: dict[str, Any] = {"model": model, "input": _embedding_input(body.get("input"))}
    dimensions = fields.integer(body, "dimensions", 1)
    if dimensions is not None:
        native["dimensions"] = dimensions
    encoding = fields.string(body, "encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise OpenAIRequestError(f"'encoding_format' must be 'float' or 'base64', got {encoding!r}",
                                 param="encoding_format")
    options = fields.mapping(body, "options")
    if options:
        native["options"] = dict(options)
    if body.get("keep_alive") is not None:
        native["keep_alive"] = body["keep_alive"]
    return NativeCall("/api/embed", native,
                         ReplyContext(RequestKind.EMBEDDING, model, encoding_format=encoding))


def _context(kind: RequestKind, model: str, body: dict[str, Any], stream: bool) -> ReplyContext:
    stream_options = fields.mapping(body, "stream_options") or {}
    include_usage = stream and fields.boolean(stream_options, "include_usage")
    return ReplyContext(kind, model, stream=stream, include_usage=include_usage)


def _finish(body: dict[str, Any], native: dict[str, Any]) -> None:
    """Options and the knobs chat and completions share."""
    n = fields.integer(body, "n", 1)
    if n is not None and n > 1:
        raise OpenAIRequestError("'n' greater than 1 is not supported", param="n")
    options = native_options(body)
    if options:
        native["options"] = options
    if body.get("keep_alive") is not None:
        native["keep_alive"] = body["keep_alive"]


def native_options(body: dict[str, Any]) -> dict[str, Any]:
    """The native options an OpenAI request's sampling fields (and its `options` extension) ask for."""
    options = dict(fields.mapping(body, "options") or {})
    max_tokens = fields.integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = fields.integer(body, "max_tokens", 1)
    picked: dict[str, Any] = {
        "num_predict": max_tokens,
        "temperature": fields.number(body, "temperature", 0, 2),
        "top_p": fields.number(body, "top_p", 0, 1),
        "frequency_penalty": fields.number(body, "frequency_penalty", -2, 2),
        "presence_penalty": fields.number(body, "presence_penalty", -2, 2),
        "seed": fields.integer(body, "seed"),
        "stop": fields.stop_list(body),
        # Not OpenAI, but sent by clients written for llama.cpp and vLLM; Ollama knows them.
        "top_k": fields.integer(body, "top_k", 0),
        "min_p": fields.number(body, "min_p", 0, 1),
        "repeat_penalty": fields.number(body, "repeat_penalty", 0, 10),
    }
    options.update({key: value for key, value in picked.items() if value is not None})
    return options


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise OpenAIRequestError("'tools' must be a list", param="tools")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type", "function") != "function" \
                or not isinstance(function.get("name"), str):
            raise OpenAIRequestError(f"tools[{i}] must be {{'type': 'function', 'function': "
                                     "{'name': ..., 'parameters': ...}}", param=f"tools[{i}]")
    choice = body.get("tool_choice")
    if choice == "none":
        return []
    if isinstance(choice, dict):
        # Ollama cannot force a call; offering only the chosen tool is the nearest it gets.
        name = (choice.get("function") or {}).get("name")
        chosen = [tool for tool in tools if tool["function"]["name"] == name]
        if not chosen:
            raise OpenAIRequestError(f"tool_choice names {name!r}, which is not in 'tools'",
                                     param="tool_choice")
        return chosen
    if choice not in (None, "auto", "required"):
        raise OpenAIRequestError("'tool_choice' must be 'none', 'auto', 'required' or a function",
                                 param="tool_choice")
    return list(tools)


def _format(body: dict[str, Any]) -> str | dict[str, Any] | None:
    response_format = fields.mapping(body, "response_format")
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise OpenAIRequestError("response_format.json_schema.schema must be a JSON schema object",
                                     param="response_format")
        return schema
    raise OpenAIRequestError(f"response_format.type must be text, json_object or json_schema, got "
                             f"{kind!r}", param="response_format")


def native_think(body: dict[str, Any]) -> bool | str | None:
    """Native `think` from `reasoning_effort`, `reasoning.effort` or the native `think` extension."""
    effort = body.get("reasoning_effort")
    if effort is None and isinstance(body.get("reasoning"), dict):
        effort = body["reasoning"].get("effort")
    if effort is None:
        think = body.get("think")
        return think if isinstance(think, bool | str) else None
    if effort not in _THINK_BY_EFFORT:
        raise OpenAIRequestError(f"'reasoning_effort' must be one of {', '.join(_THINK_BY_EFFORT)}, "
                                 f"got {effort!r}", param="reasoning_effort")
    return _THINK_BY_EFFORT[effort]


def _prompt(prompt: Any) -> str:
    # A one-element list is what several SDK helpers send for a single prompt.
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise OpenAIRequestError("'prompt' must be a string (batches and token arrays are not "
                                 "supported)", param="prompt")
    return prompt


def _embedding_input(value: Any) -> str | list[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return list(value)
    if isinstance(value, list) and not value:
        raise OpenAIRequestError("'input' must not be empty", param="input")
    raise OpenAIRequestError("'input' must be a string or a list of strings (token arrays are "
                             "not supported)", param="input")
