"""The WebSocket front's request messages, checked and turned into what a pipeline call is made of.

A client sends JSON objects: a request (`{"request_id", "model", "prompt" | "messages", ...}`) or a
cancel (`{"type": "cancel", "request_id"}`). `parse_message` takes the decoded JSON value and answers
a `StreamRequest` or a `CancelRequest`, or raises `BadRequest` naming the field, the value and what
is allowed. The routing hints are read by `parse_route_fields`, so they mean exactly what the HTTP
routing headers mean. Pure: values in, values out; no sockets, no JSON decoding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ollama_proxy.core.ollama_api import SizeMode, context_choice
from ollama_proxy.core.operations import Operation
from ollama_proxy.core.routing.headers import FIELD_HEADERS, parse_route_fields
from ollama_proxy.core.routing.state import RouteRequest
from ollama_proxy.errors import BadRequest

# A request id is echoed in every answer and logged: bounded, and printable so a log line stays one line.
MAX_REQUEST_ID_CHARS = 128
_REQUEST_FIELDS = frozenset({"request_id", "model", "prompt", "messages", "stream", "options", "context",
                             *FIELD_HEADERS})
_CANCEL_FIELDS = frozenset({"type", "request_id"})


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """A generate (`prompt`) or chat (`messages`) request, with the native body it sends."""

    request_id: str | None  # None: the front makes one up and says it in every answer
    operation: Operation
    model: str
    body: dict[str, Any]
    hints: RouteRequest
    size_mode: SizeMode
    fixed_size: int | None

    @property
    def path(self) -> str:
        return "/api/chat" if self.operation is Operation.CHAT else "/api/generate"

    @property
    def stream(self) -> bool:
        return bool(self.body["stream"])


@dataclass(frozen=True, slots=True)
class CancelRequest:
    request_id: str


def known_request_id(value: Any) -> str | None:
    """The message's request id when it has a valid one: what an error about the message is tagged with."""
    if isinstance(value, Mapping):
        given = value.get("request_id")
        if isinstance(given, str) and _valid_request_id(given):
            return given
    return None


def parse_message(value: Any, sizes: Sequence[int]) -> StreamRequest | CancelRequest:
    """Check one decoded message; `sizes` are the context sizes a request may ask for by number."""
    if not isinstance(value, dict):
        raise BadRequest(f"a message must be a JSON object, got {_json_type(value)}")
    kind = value.get("type")
    if kind == "cancel":
        _refuse_unknown(value, _CANCEL_FIELDS)
        request_id = _request_id(value)
        if request_id is None:
            raise BadRequest("request_id: a cancel names the request it stops")
        return CancelRequest(request_id)
    if kind is not None:
        raise BadRequest(f"type: expected \"cancel\" (or no type, for a request), got {kind!r}")
    _refuse_unknown(value, _REQUEST_FIELDS)
    request_id = _request_id(value)
    model = value.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest(f"model: expected a model name, got {_shown(model)}")
    body: dict[str, Any] = {"model": model}
    if ("prompt" in value) == ("messages" in value):
        raise BadRequest("expected either prompt (a generate) or messages (a chat), not "
                         + ("both" if "prompt" in value else "neither"))
    if "prompt" in value:
        operation = Operation.GENERATE
        body["prompt"] = _prompt(value["prompt"])
    else:
        operation = Operation.CHAT
        body["messages"] = _messages(value["messages"])
    stream = value.get("stream", True)
    if not isinstance(stream, bool):
        raise BadRequest(f"stream: expected true or false, got {_shown(stream)}")
    body["stream"] = stream
    options = value.get("options")
    if options is not None:
        if not isinstance(options, dict):
            raise BadRequest(f"options: expected a JSON object, got {_json_type(options)}")
        body["options"] = options
    size_mode, fixed_size = _context(value.get("context", "auto"), sizes)
    return StreamRequest(request_id, operation, model, body, parse_route_fields(value), size_mode, fixed_size)


def _refuse_unknown(value: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise BadRequest(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; allowed: "
                         f"{', '.join(sorted(allowed))}")


def _request_id(value: Mapping[str, Any]) -> str | None:
    given = value.get("request_id")
    if given is None:
        return None
    if not isinstance(given, str) or not _valid_request_id(given):
        raise BadRequest(f"request_id: expected a non-empty printable string of at most {MAX_REQUEST_ID_CHARS} "
                         f"characters, got {_shown(given)}")
    return given


def _valid_request_id(text: str) -> bool:
    return 0 < len(text) <= MAX_REQUEST_ID_CHARS and text.isprintable()


def _prompt(prompt: Any) -> str:
    if not isinstance(prompt, str):
        raise BadRequest(f"prompt: expected a string, got {_json_type(prompt)}")
    return prompt


def _messages(messages: Any) -> list[Any]:
    if not isinstance(messages, list) or not messages:
        raise BadRequest(f"messages: expected a non-empty array of messages, got {_shown(messages)}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}]: expected an object with a string role, got {_shown(message)}")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content: expected a string, got {_json_type(content)}")
    return messages


def _context(spec: Any, sizes: Sequence[int]) -> tuple[SizeMode, int | None]:
    """`"auto"` or one of `sizes` (as a number or its digits), as the `/proxy-context/` route takes them."""
    text = str(spec) if isinstance(spec, int) and not isinstance(spec, bool) else spec
    choice = context_choice(text, sizes) if isinstance(text, str) else None
    if choice is not None:
        return choice
    raise BadRequest(f"context: expected \"auto\" or one of {', '.join(map(str, sizes))}, got {_shown(spec)}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)
