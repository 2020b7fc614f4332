"""OpenAI-type backends' answers translated back into native Ollama replies and NDJSON lines.

Counts come from `usage` when the backend sends it; durations are what the proxy can measure
(`started` and `now` are passed in, as unix seconds), so `prompt_eval_duration` is the time to
the first token and `eval_duration` the rest. Embeddings are L2-normalised because Ollama's are
and clients compare them with a dot product; llama.cpp's are not.

llama.cpp quirk handled here: a streamed request whose prompt is longer than the context gets
HTTP 200 and an empty event stream, with no error and no `[DONE]` (and one cut off by another
request ends with `[DONE]` but no finish reason). `NativeStreamTranslator.close()` turns both
into a native `{"error": ...}` line. Nothing here does I/O.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson

from ollama_proxy.core.openai.errors import BackendReplyError
from ollama_proxy.core.openai.messages import parse_arguments, tool_call_to_native
from ollama_proxy.core.openai.reverse_requests import NativeKind, NativeReplyContext
from ollama_proxy.core.openai.sse import SseEvent

EMPTY_STREAM = ("the backend ended the stream without an answer (a llama.cpp server does this when the "
                "prompt is longer than its context window, n_ctx)")
CUT_STREAM = "the backend ended the stream without a finish reason (it was interrupted)"


def created_at(now: float) -> str:
    """Ollama's `created_at`: RFC 3339 in UTC."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def load_only_reply(context: NativeReplyContext, now: float) -> dict[str, Any]:
    """What Ollama answers to a chat/generate call without prompt or messages ("load the model")."""
    reply = _line(context, now, "", None, done=True)
    reply["done_reason"] = "load"
    return reply


def native_reply(openai: dict[str, Any], context: NativeReplyContext, *, started: float,
                 now: float) -> dict[str, Any]:
    """A non-streamed OpenAI answer as the native reply the client asked for.

    Raises `BackendReplyError` when the answer lacks what a reply needs (a 502 for the client).
    """
    if context.kind is NativeKind.EMBED:
        return _embed_reply(openai, context, started=started, now=now)
    choices = openai.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BackendReplyError("the backend's answer has no choices")
    choice = choices[0]
    message = choice.get("message") or {}
    text = choice.get("text") if "text" in choice else message.get("content")
    calls = [_tool_call(call, k) for k, call in enumerate(message.get("tool_calls") or [])]
    reply = _line(context, now, text or "", _thinking(message), done=True, tool_calls=calls)
    reply.update(_done_fields(choice.get("finish_reason"), openai.get("usage"),
                              started=started, first_token=None, now=now))
    return reply


def native_error(status: int, body: Any) -> tuple[int, dict[str, str]]:
    """An OpenAI-type backend's error reply as Ollama's `{"error": "..."}`, status kept.

    Understands OpenAI's `{"error": {"message"}}`, FastAPI's `{"detail": ...}` (llama-cpp-python's
    404 and validation errors) and a bare string.
    """
    message: Any = None
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else error or body.get("detail")
    elif isinstance(body, str):
        message = body
    if not isinstance(message, str):
        message = orjson.dumps(message).decode() if message else f"backend answered HTTP {status}"
    return status, {"error": message}


def tags_from_models(models: dict[str, Any]) -> dict[str, Any]:
    """`/v1/models` as `/api/tags`; what OpenAI servers do not say (size, digest) is left empty."""
    entries = []
    for model in models.get("data") or []:
        name = model.get("id") or ""
        entries.append({"name": name, "model": name, "modified_at": created_at(model.get("created") or 0),
                        "size": 0, "digest": "",
                        "details": {"parent_model": "", "format": "", "family": "", "families": None,
                                    "parameter_size": "", "quantization_level": ""}})
    return {"models": entries}


class NativeStreamTranslator:
    """Feed the backend's SSE events; get native NDJSON objects (write each as one line).

    The final `done: true` line is produced at `[DONE]`, not at the finish chunk, because the
    usage chunk (the token counts) comes between the two.
    """

    def __init__(self, context: NativeReplyContext, *, started: float) -> None:
        self._context = context
        self._started = started
        self._first_token: float | None = None
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None
        self._calls: dict[int, dict[str, str]] = {}
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def feed(self, event: SseEvent, now: float) -> list[dict[str, Any]]:
        if self._finished:
            return []
        if event.is_done:
            return [self._final(now)] if self._finish_reason else [self.abort(CUT_STREAM)]
        try:
            chunk = event.json()
        except orjson.JSONDecodeError:
            return [self.abort(f"the backend sent an event that is not JSON: {event.data[:80]!r}")]
        if not isinstance(chunk, dict):
            return [self.abort(f"the backend sent an unexpected event: {event.data[:80]!r}")]
        if "error" in chunk:
            return [self.abort(native_error(500, chunk)[1]["error"])]
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        return [line for choice in chunk.get("choices") or [] if (line := self._choice(choice, now))]

    def close(self, now: float) -> list[dict[str, Any]]:
        """Call at the backend's end of file. A finish reason without `[DONE]` still completes the
        reply; a stream with no finish at all becomes an error line."""
        if self._finished:
            return []
        return [self._final(now)] if self._finish_reason else [self.abort(EMPTY_STREAM)]

    def abort(self, message: str) -> dict[str, Any]:
        """The native error line that ends a failed stream (as Ollama sends mid-stream errors)."""
        self._finished = True
        return {"error": message}

    def _choice(self, choice: dict[str, Any], now: float) -> dict[str, Any] | None:
        if choice.get("index", 0) != 0:
            return None
        if choice.get("finish_reason"):
            self._finish_reason = choice["finish_reason"]
        delta = choice.get("delta") or {}
        for call in delta.get("tool_calls") or []:
            self._collect(call)
        text = choice.get("text") if "text" in choice else delta.get("content")
        thinking = _thinking(delta)
        if not text and not thinking:
            return None
        if self._first_token is None:
            self._first_token = now
        return _line(self._context, now, text or "", thinking, done=False)

    def _collect(self, call: dict[str, Any]) -> None:
        # OpenAI streams a call in pieces: id and name first, then argument fragments, by index.
        slot = self._calls.setdefault(int(call.get("index", len(self._calls))),
                                      {"id": "", "name": "", "arguments": ""})
        function = call.get("function") or {}
        slot["id"] = call.get("id") or slot["id"]
        slot["name"] += function.get("name") or ""
        slot["arguments"] += function.get("arguments") or ""

    def _final(self, now: float) -> dict[str, Any]:
        calls = []
        for k in sorted(self._calls):
            slot = self._calls[k]
            try:
                calls.append(_tool_call({"id": slot["id"], "function": slot}, k))
            except BackendReplyError as exc:
                return self.abort(str(exc))
        self._finished = True
        line = _line(self._context, now, "", None, done=True, tool_calls=calls)
        line.update(_done_fields(self._finish_reason, self._usage, started=self._started,
                                 first_token=self._first_token, now=now))
        return line


def _line(context: NativeReplyContext, now: float, text: str, thinking: str | None, *, done: bool,
          tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    line: dict[str, Any] = {"model": context.model, "created_at": created_at(now)}
    if context.kind is NativeKind.CHAT:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = tool_calls
        line["message"] = message
    else:
        line["response"] = text
        if thinking:
            line["thinking"] = thinking
        if tool_calls:
            line["tool_calls"] = tool_calls
    line["done"] = done
    return line


def _done_fields(reason: Any, usage: Any, *, started: float, first_token: float | None,
                 now: float) -> dict[str, Any]:
    fields: dict[str, Any] = {"done_reason": "length" if reason == "length" else "stop",
                              "total_duration": _ns(now - started)}
    if first_token is not None:
        fields["prompt_eval_duration"] = _ns(first_token - started)
        fields["eval_duration"] = _ns(now - first_token)
    # Ollama omits zero counts (reference 1.3); do the same rather than claim 0 tokens.
    if isinstance(usage, dict):
        if usage.get("prompt_tokens"):
            fields["prompt_eval_count"] = int(usage["prompt_tokens"])
        if usage.get("completion_tokens"):
            fields["eval_count"] = int(usage["completion_tokens"])
    return fields


def _embed_reply(openai: dict[str, Any], context: NativeReplyContext, *, started: float,
                 now: float) -> dict[str, Any]:
    data = openai.get("data")
    if not isinstance(data, list):
        raise BackendReplyError("the backend's embeddings answer has no data list")
    ordered = sorted(data, key=lambda item: item.get("index", 0))
    reply: dict[str, Any] = {"model": context.model,
                             "embeddings": [_normalised(item.get("embedding")) for item in ordered],
                             "total_duration": _ns(now - started)}
    prompt_tokens = (openai.get("usage") or {}).get("prompt_tokens")
    if prompt_tokens:
        reply["prompt_eval_count"] = int(prompt_tokens)
    return reply


def _normalised(vector: Any) -> list[float]:
    if not isinstance(vector, list):
        raise BackendReplyError("the backend sent an embedding that is not a list of numbers "
                                "(was encoding_format changed?)")
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else list(vector)


def _thinking(message: dict[str, Any]) -> str | None:
    # llama.cpp and vLLM call it reasoning_content; Ollama's /v1 and newer vLLM call it reasoning.
    value = message.get("reasoning_content") or message.get("reasoning")
    return value if isinstance(value, str) and value else None


def _tool_call(call: dict[str, Any], index: int) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = parse_arguments(function.get("arguments"))
    if arguments is None:
        raise BackendReplyError(f"the backend's tool call {function.get('name')!r} has arguments that "
                                f"are not a JSON object: {str(function.get('arguments'))[:80]!r}")
    return tool_call_to_native(call, index, arguments)


def _ns(seconds: float) -> int:
    return max(0, round(seconds * 1e9))
