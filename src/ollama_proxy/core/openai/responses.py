"""Native Ollama replies shaped as OpenAI responses (non-streamed), and the model list.

Ids and timestamps are arguments (`new_completion_id(kind, rng)` makes one), so every function
here is deterministic. Streams are in `stream.py`; nothing here knows about HTTP.
"""

from __future__ import annotations

import base64
import random
import struct
from datetime import datetime
from typing import Any

from ollama_proxy.core.ollama_api import canonical_model
from ollama_proxy.core.openai.errors import openai_error
from ollama_proxy.core.openai.messages import tool_call_to_openai
from ollama_proxy.core.openai.requests import ReplyContext, RequestKind

SYSTEM_FINGERPRINT = "fp_ollama"

_ID_PREFIX = {RequestKind.CHAT: "chatcmpl-", RequestKind.COMPLETION: "cmpl-",
              RequestKind.EMBEDDING: "emb-"}


def new_completion_id(kind: RequestKind, rng: random.Random) -> str:
    """A fresh response id such as `chatcmpl-3f9a...` (96 random bits, unlike Ollama's 0-998)."""
    return f"{_ID_PREFIX[kind]}{rng.getrandbits(96):024x}"


def usage(native: dict[str, Any]) -> dict[str, int]:
    """OpenAI usage from native counts; Ollama omits zero counts, so absent means 0."""
    prompt = int(native.get("prompt_eval_count") or 0)
    completion = int(native.get("eval_count") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(done_reason: Any, has_tool_calls: bool) -> str:
    """`length` passes through; any other end (stop, load, unload) is `stop`, or `tool_calls`
    when the model called tools, which is what OpenAI clients test to run them."""
    if done_reason == "length":
        return "length"
    return "tool_calls" if has_tool_calls else "stop"


def tool_calls_to_openai(calls: list[dict[str, Any]], completion_id: str,
                         first_index: int = 0) -> list[dict[str, Any]]:
    """Native tool calls as OpenAI's; calls without an id get one derived from the response id."""
    stem = completion_id.rpartition("-")[2][:12]
    return [tool_call_to_openai(call, f"call_{stem}_{first_index + k}") for k, call in enumerate(calls)]


def chat_completion(native: dict[str, Any], context: ReplyContext, *, completion_id: str,
                    created: int) -> dict[str, Any]:
    """A native `/api/chat` reply (`stream: false`) as a `chat.completion` object."""
    message = native.get("message") or {}
    calls = tool_calls_to_openai(message.get("tool_calls") or [], completion_id)
    content = message.get("content") or ""
    out: dict[str, Any] = {"role": "assistant", "content": content or (None if calls else "")}
    if message.get("thinking"):
        out["reasoning"] = message["thinking"]
    if calls:
        out["tool_calls"] = calls
    reason = finish_reason(native.get("done_reason"), bool(calls))
    choice = {"index": 0, "message": out, "finish_reason": reason,
              "logprobs": {"content": native["logprobs"]} if native.get("logprobs") else None}
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": context.model,
            "system_fingerprint": SYSTEM_FINGERPRINT, "choices": [choice], "usage": usage(native)}


def text_completion(native: dict[str, Any], context: ReplyContext, *, completion_id: str,
                    created: int) -> dict[str, Any]:
    """A native `/api/generate` reply (`stream: false`) as a `text_completion` object."""
    choice = {"index": 0, "text": native.get("response") or "", "logprobs": None,
              "finish_reason": finish_reason(native.get("done_reason"), False)}
    return {"id": completion_id, "object": "text_completion", "created": created, "model": context.model,
            "system_fingerprint": SYSTEM_FINGERPRINT, "choices": [choice], "usage": usage(native)}


def embeddings_list(native: dict[str, Any], context: ReplyContext) -> dict[str, Any]:
    """A native `/api/embed` reply as OpenAI's embeddings list (`base64`: little-endian float32)."""
    data = [{"object": "embedding", "index": i, "embedding": _encode_vector(vector, context.encoding_format)}
            for i, vector in enumerate(native.get("embeddings") or [])]
    prompt = int(native.get("prompt_eval_count") or 0)
    return {"object": "list", "data": data, "model": context.model,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}


def reply_from_native(native: dict[str, Any], context: ReplyContext, *, completion_id: str,
                      created: int) -> dict[str, Any]:
    """Whichever of the three above the request's kind calls for."""
    if context.kind is RequestKind.EMBEDDING:
        return embeddings_list(native, context)
    translate = chat_completion if context.kind is RequestKind.CHAT else text_completion
    return translate(native, context, completion_id=completion_id, created=created)


def error_from_native(status: int, native: Any) -> tuple[int, dict[str, Any]]:
    """A native error reply (`{"error": "..."}`, any status) as an OpenAI error, status kept."""
    message = native.get("error") if isinstance(native, dict) else None
    if not isinstance(message, str) or not message:
        message = f"the backend answered with HTTP status {status}"
    return openai_error(message, status)


def _encode_vector(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format != "base64":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def model_object(entry: dict[str, Any]) -> dict[str, Any]:
    """One `/api/tags` entry as an OpenAI model object; `owned_by` is the name's namespace."""
    name = entry.get("name") or entry.get("model") or ""
    path = name.split(":", 1)[0].split("/")
    return {"id": name, "object": "model", "created": unix_time(entry.get("modified_at")),
            "owned_by": path[-2] if len(path) > 1 else "library"}


def models_list(tags: dict[str, Any]) -> dict[str, Any]:
    """`/api/tags` as `/v1/models`; `data` is `[]` when empty (Ollama sends null, which breaks SDKs)."""
    return {"object": "list", "data": [model_object(entry) for entry in tags.get("models") or []]}


def find_model(tags: dict[str, Any], model_id: str) -> dict[str, Any] | None:
    """The model object for `/v1/models/{model_id}`, matching with or without the `:latest` tag."""
    wanted = canonical_model(model_id)
    for entry in tags.get("models") or []:
        if canonical_model(entry.get("name") or entry.get("model") or "") == wanted:
            return model_object(entry)
    return None


def unix_time(rfc3339: Any) -> int:
    """Seconds since the epoch for Ollama's RFC 3339 timestamps (nanosecond fractions allowed); 0 if
    missing or unreadable, because a bad date must not fail a model listing."""
    if not isinstance(rfc3339, str) or not rfc3339:
        return 0
    try:
        return int(datetime.fromisoformat(rfc3339).timestamp())
    except ValueError:
        return 0
