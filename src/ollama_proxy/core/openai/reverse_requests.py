"""Native Ollama requests translated for OpenAI-type backends (llama.cpp server, vLLM, LM Studio).

An Ollama client calling `/api/chat`, `/api/generate` or `/api/embed` on a backend of type
`openai` gets its request rewritten here to `/v1/chat/completions`, `/v1/completions` or
`/v1/embeddings`. `/api/generate` becomes a *chat* call unless it is `raw` or has a `suffix`:
Ollama applies the model's chat template to a generate prompt, and on an OpenAI server only
the chat endpoint does that. Load-time options (`num_ctx`, `num_gpu`, ...) cannot be set per
request on these servers and are dropped. Nothing here knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ollama_proxy.core.openai import fields
from ollama_proxy.core.openai.messages import messages_to_openai
from ollama_proxy.core.operations import Operation
from ollama_proxy.errors import BadRequest

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"


class NativeKind(StrEnum):
    CHAT = "chat"
    GENERATE = "generate"
    EMBED = "embed"


@dataclass(frozen=True, slots=True)
class NativeReplyContext:
    """What translating the backend's answer back needs: the client's call and the upstream path."""

    kind: NativeKind
    model: str
    upstream_path: str
    stream: bool = False


@dataclass(frozen=True, slots=True)
class OpenAIRequest:
    """A call to make on an OpenAI-type backend: POST `body` to `path` (under its base URL)."""

    path: str
    body: dict[str, Any]
    context: NativeReplyContext


# Native sampling options with the same meaning on OpenAI-type servers; top_k, min_p and
# repeat_penalty are extensions that llama.cpp, vLLM and LM Studio all accept.
_SAME_NAME_OPTIONS = ("temperature", "top_p", "seed", "stop", "frequency_penalty", "presence_penalty",
                      "top_k", "min_p", "repeat_penalty")


def is_load_only(kind: NativeKind, body: dict[str, Any]) -> bool:
    """True for Ollama's "just load the model" calls (no prompt / no messages), which an OpenAI
    server cannot express; answer them with `reverse_responses.load_only_reply`."""
    if kind is NativeKind.GENERATE:
        return not body.get("prompt")
    if kind is NativeKind.CHAT:
        return not body.get("messages")
    return False


def chat_to_openai(body: Any) -> OpenAIRequest:
    """`/api/chat` → `/v1/chat/completions`."""
    body = fields.json_object(body)
    model = _model(body)
    openai: dict[str, Any] = {"model": model, "messages": messages_to_openai(body.get("messages") or [])}
    if body.get("tools"):
        openai["tools"] = body["tools"]
    return _finish(body, openai, NativeKind.CHAT, CHAT_PATH)


def generate_to_openai(body: Any) -> OpenAIRequest:
    """`/api/generate` → `/v1/chat/completions`, or `/v1/completions` when raw or with a suffix."""
    body = fields.json_object(body)
    model = _model(body)
    prompt = body.get("prompt") or ""
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string")
    if body.get("raw") or body.get("suffix"):
        if body.get("images"):
            raise BadRequest("images cannot be sent with raw or suffix to an OpenAI-type backend")
        openai: dict[str, Any] = {"model": model, "prompt": prompt}
        if body.get("suffix"):
            openai["suffix"] = body["suffix"]
        return _finish(body, openai, NativeKind.GENERATE, COMPLETIONS_PATH)
    messages = [{"role": "system", "content": body["system"]}] if body.get("system") else []
    messages.append({"role": "user", "content": prompt, "images": body.get("images") or []})
    openai = {"model": model, "messages": messages_to_openai(messages)}
    return _finish(body, openai, NativeKind.GENERATE, CHAT_PATH)


def embed_to_openai(body: Any) -> OpenAIRequest:
    """`/api/embed` → `/v1/embeddings` (vectors come back normalised, as Ollama's are)."""
    body = fields.json_object(body)
    model = _model(body)
    value = body.get("input", "")
    if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
        raise BadRequest("invalid input type")
    openai: dict[str, Any] = {"model": model, "input": value, "encoding_format": "float"}
    if isinstance(body.get("dimensions"), int) and body["dimensions"] > 0:
        openai["dimensions"] = body["dimensions"]
    context = NativeReplyContext(NativeKind.EMBED, model, EMBEDDINGS_PATH)
    return OpenAIRequest(EMBEDDINGS_PATH, openai, context)


# An Ollama client's operation, as a call to an OpenAI-type backend.
REVERSE_TRANSLATORS: dict[Operation, Callable[[Any], OpenAIRequest]] = {
    Operation.CHAT: chat_to_openai,
    Operation.GENERATE: generate_to_openai,
    Operation.EMBED: embed_to_openai,
}


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required")
    return model


def _finish(body: dict[str, Any], openai: dict[str, Any], kind: NativeKind, path: str) -> OpenAIRequest:
    # Native calls stream unless told otherwise (reference 1.4).
    stream = body.get("stream") is not False
    openai["stream"] = stream
    if stream:
        # Servers that honour it (vLLM) give token counts; llama.cpp ignores it harmlessly.
        openai["stream_options"] = {"include_usage": True}
    openai.update(_options(body.get("options") or {}))
    fmt = body.get("format")
    if fmt == "json":
        openai["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        openai["response_format"] = {"type": "json_schema",
                                     "json_schema": {"name": "response", "schema": fmt}}
    return OpenAIRequest(path, openai, NativeReplyContext(kind, openai["model"], path, stream))


def _options(options: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(options, dict):
        raise BadRequest("options must be an object")
    out = {key: options[key] for key in _SAME_NAME_OPTIONS if options.get(key) is not None}
    # -1 (unbounded) and -2 (fill the context) have no OpenAI spelling: leave max_tokens out.
    num_predict = options.get("num_predict")
    if isinstance(num_predict, int) and num_predict > 0:
        out["max_tokens"] = num_predict
    return out
