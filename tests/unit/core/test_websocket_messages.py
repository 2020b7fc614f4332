from __future__ import annotations

from typing import Any

import pytest

from ollama_proxy.core.admission import Priority
from ollama_proxy.core.ollama_api import SizeMode
from ollama_proxy.core.operations import Operation
from ollama_proxy.core.websocket_messages import (
    MAX_REQUEST_ID_CHARS,
    CancelRequest,
    StreamRequest,
    known_request_id,
    parse_message,
)
from ollama_proxy.errors import BadRequest

SIZES = (2048, 4096, 8192)


def parse(**message: Any) -> StreamRequest:
    parsed = parse_message(message, SIZES)
    assert isinstance(parsed, StreamRequest)
    return parsed


def test_a_generate_with_defaults() -> None:
    request = parse(request_id="r", model="llama3.2", prompt="Hi")
    assert (request.request_id, request.operation, request.path) == ("r", Operation.GENERATE, "/api/generate")
    assert request.body == {"model": "llama3.2", "prompt": "Hi", "stream": True}
    assert (request.size_mode, request.fixed_size, request.stream) == (SizeMode.AUTO, None, True)
    assert request.hints.priority is Priority.NORMAL and request.hints.target is None


def test_a_chat_with_every_optional_field() -> None:
    messages = [{"role": "user", "content": "Hi"}]
    request = parse(model="qwen3:4b", messages=messages, stream=False, options={"temperature": 0},
                    context="8192", priority="critical", max_latency_ms=500, max_power_watts=15.5,
                    latency_critical=True, power_efficient=False, target_backend="npu", media_type="audio/wav")
    assert request.request_id is None
    assert (request.operation, request.path) == (Operation.CHAT, "/api/chat")
    assert request.body == {"model": "qwen3:4b", "messages": messages, "stream": False,
                            "options": {"temperature": 0}}
    assert (request.size_mode, request.fixed_size) == (SizeMode.FIXED, 8192)
    hints = request.hints
    assert (hints.priority, hints.max_latency_ms, hints.max_power_watts) == (Priority.CRITICAL, 500.0, 15.5)
    assert (hints.latency_critical, hints.power_efficient, hints.target, hints.media_type) == (
        True, False, "npu", "audio")


def test_a_cancel() -> None:
    assert parse_message({"type": "cancel", "request_id": "r"}, SIZES) == CancelRequest("r")


@pytest.mark.parametrize(("message", "says"), [
    pytest.param([], "a message must be a JSON object, got an array", id="array"),
    pytest.param({"prompt": "x"}, "model: expected a model name, got None", id="no-model"),
    pytest.param({"model": " ", "prompt": "x"}, "model: expected a model name", id="blank-model"),
    pytest.param({"model": "m"}, "not neither", id="no-prompt"),
    pytest.param({"model": "m", "prompt": "x", "messages": []}, "not both", id="both"),
    pytest.param({"model": "m", "prompt": 3}, "prompt: expected a string, got a number", id="prompt-type"),
    pytest.param({"model": "m", "messages": []}, "messages: expected a non-empty array", id="no-messages"),
    pytest.param({"model": "m", "messages": [{"content": "x"}]}, "messages[0]: expected an object with a string role",
                 id="message-without-role"),
    pytest.param({"model": "m", "messages": [{"role": "user", "content": 1}]}, "messages[0].content",
                 id="content-type"),
    pytest.param({"model": "m", "prompt": "x", "stream": 1}, "stream: expected true or false", id="stream-type"),
    pytest.param({"model": "m", "prompt": "x", "options": "fast"}, "options: expected a JSON object", id="options"),
    pytest.param({"model": "m", "prompt": "x", "context": 1000}, 'context: expected "auto" or one of 2048, 4096, '
                 "8192, got 1000", id="context-size"),
    pytest.param({"model": "m", "prompt": "x", "context": True}, "context:", id="context-bool"),
    pytest.param({"model": "m", "prompt": "x", "context": "08192"}, "context:", id="context-digits-not-ours"),
    pytest.param({"model": "m", "prompt": "x", "priority": "urgent"}, "priority: unknown priority 'urgent'",
                 id="priority"),
    pytest.param({"model": "m", "prompt": "x", "latency_critical": "maybe"}, "latency_critical: expected true/false",
                 id="flag"),
    pytest.param({"model": "m", "prompt": "x", "max_power_watts": 0}, "max_power_watts: expected a positive number",
                 id="power"),
    pytest.param({"model": "m", "prompt": "x", "target_backend": ["a"]}, "target_backend: expected a string",
                 id="target-type"),
    pytest.param({"model": "m", "prompt": "x", "seed": 1, "raw": True}, "unknown fields raw, seed; allowed:",
                 id="unknown-fields"),
    pytest.param({"model": "m", "prompt": "x", "request_id": ""}, "request_id: expected a non-empty", id="empty-id"),
    pytest.param({"model": "m", "prompt": "x", "request_id": "a\nb"}, "request_id:", id="unprintable-id"),
    pytest.param({"model": "m", "prompt": "x", "request_id": "x" * (MAX_REQUEST_ID_CHARS + 1)}, "at most 128",
                 id="long-id"),
    pytest.param({"model": "m", "prompt": "x", "request_id": 7}, "request_id:", id="numeric-id"),
    pytest.param({"type": "cancel"}, "request_id: a cancel names the request it stops", id="cancel-without-id"),
    pytest.param({"type": "cancel", "request_id": "r", "model": "m"}, "unknown field model", id="cancel-extra"),
    pytest.param({"type": "generate", "model": "m", "prompt": "x"}, 'type: expected "cancel"', id="unknown-type"),
])
def test_refusals_name_the_field(message: Any, says: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_message(message, SIZES)
    assert says in str(refused.value)
    assert refused.value.status == 400


@pytest.mark.parametrize(("value", "known"), [
    pytest.param({"request_id": "r", "model": 1}, "r", id="valid"),
    pytest.param({"request_id": ""}, None, id="empty"),
    pytest.param({"request_id": 5}, None, id="not-a-string"),
    pytest.param(["r"], None, id="not-an-object"),
])
def test_known_request_id(value: Any, known: str | None) -> None:
    assert known_request_id(value) == known
