from __future__ import annotations

import random
from typing import Any

import anthropic
import pytest
from anthropic.types import Message
from anthropic_fakes import FakeApi

from ollama_proxy.core.anthropic import (
    MessagesReply,
    MessageTranslator,
    anthropic_error,
    error_type_for_status,
    messages_to_native,
)

WHOLE = {"model": "qwen3", "created_at": "2026-08-22T09:17:00Z",
         "message": {"role": "assistant", "content": "Hello!"}, "done": True, "done_reason": "stop",
         "prompt_eval_count": 11, "eval_count": 3}
TOOLS = {"model": "qwen3", "message": {
    "role": "assistant", "content": "Checking.", "thinking": "Two cities.",
    "tool_calls": [{"id": "call_k3v9q2zd", "function": {"index": 0, "name": "get_weather",
                                                       "arguments": {"city": "Oslo"}}},
                   {"function": {"index": 1, "name": "get_time", "arguments": '{"tz": "CET"}'}}]},
    "done": True, "done_reason": "stop", "prompt_eval_count": 142, "eval_count": 19}


def whole(native: dict[str, Any]) -> dict[str, Any]:
    return MessageTranslator("qwen3", message_id="msg_417").whole(native)


def test_text_reply_is_a_message() -> None:
    reply = whole(WHOLE)
    assert reply == {"id": "msg_417", "type": "message", "role": "assistant", "model": "qwen3",
                     "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn",
                     "stop_sequence": None, "usage": {"input_tokens": 11, "output_tokens": 3}}
    Message.model_validate(reply)


def test_thinking_text_and_tool_use_blocks_in_order() -> None:
    reply = whole(TOOLS)
    assert reply["content"] == [
        {"type": "thinking", "thinking": "Two cities.", "signature": ""},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_417_0", "name": "get_weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "toolu_417_1", "name": "get_time", "input": {"tz": "CET"}},
    ]
    assert reply["stop_reason"] == "tool_use"
    assert reply["usage"] == {"input_tokens": 142, "output_tokens": 19}
    parsed = Message.model_validate(reply)
    assert [block.type for block in parsed.content] == ["thinking", "text", "tool_use", "tool_use"]


def test_tool_call_only_reply_has_no_text_block() -> None:
    native = {**TOOLS, "message": {"role": "assistant", "content": "",
                                   "tool_calls": TOOLS["message"]["tool_calls"][:1]}}
    assert [block["type"] for block in whole(native)["content"]] == ["tool_use"]


def test_empty_reply_still_has_an_empty_text_block_and_zero_usage() -> None:
    reply = whole({"model": "qwen3", "message": {"role": "assistant", "content": ""}, "done": True})
    assert reply["content"] == [{"type": "text", "text": ""}]
    assert reply["usage"] == {"input_tokens": 0, "output_tokens": 0}
    Message.model_validate(reply)


@pytest.mark.parametrize(("done_reason", "stop_reason"), [("stop", "end_turn"), ("length", "max_tokens"),
                                                          (None, "end_turn")])
def test_stop_reason_from_done_reason(done_reason: str | None, stop_reason: str) -> None:
    assert whole({**WHOLE, "done_reason": done_reason})["stop_reason"] == stop_reason


def test_unreadable_tool_arguments_become_an_empty_input() -> None:
    native = {**WHOLE, "message": {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "f", "arguments": "not json"}}]}}
    assert whole(native)["content"][0]["input"] == {}


def test_translation_makes_fresh_message_ids_from_the_rng() -> None:
    reply = MessagesReply("qwen3")
    first = reply.translator(rng=random.Random(7), now=0).whole(WHOLE)["id"]
    again = reply.translator(rng=random.Random(7), now=0).whole(WHOLE)["id"]
    other = reply.translator(rng=random.Random(8), now=0).whole(WHOLE)["id"]
    assert first == again != other
    assert first.startswith("msg_") and len(first) == 4 + 24


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "not_found_error"), (413, "request_too_large"), (422, "invalid_request_error"),
    (429, "rate_limit_error"), (500, "api_error"), (502, "api_error"), (503, "overloaded_error"),
    (504, "timeout_error"), (529, "overloaded_error"),
])
def test_error_types_by_status(status: int, kind: str) -> None:
    assert error_type_for_status(status) == kind
    assert anthropic_error("boom", status) == {"type": "error", "error": {"type": kind, "message": "boom"}}


def test_native_error_reply_keeps_its_status_and_message() -> None:
    translator = MessageTranslator("qwen3", message_id="msg_1")
    assert translator.error(404, {"error": "model 'qwen9' not found"}) == (
        404, {"type": "error", "error": {"type": "not_found_error", "message": "model 'qwen9' not found"}})
    status, body = translator.error(500, "<html>oops</html>")
    assert (status, body["error"]["type"]) == (500, "api_error")
    assert "500" in body["error"]["message"]


# What the real SDK makes of it.

def test_sdk_reads_the_whole_reply(api: FakeApi, client: anthropic.Anthropic) -> None:
    api.answer_json(whole(TOOLS))
    reply = client.messages.create(model="qwen3", max_tokens=64, messages=[{"role": "user", "content": "Hi"}])
    assert reply.stop_reason == "tool_use"
    assert reply.content[1].type == "text" and reply.content[1].text == "Checking."
    tool_use = reply.content[2]
    assert tool_use.type == "tool_use" and tool_use.input == {"city": "Oslo"}
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (142, 19)


def test_a_tool_use_id_from_a_reply_resolves_in_the_next_request() -> None:
    reply = whole(TOOLS)
    call = reply["content"][2]
    history = [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": reply["content"]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "4 C"}]}]
    messages = messages_to_native({"model": "qwen3", "max_tokens": 8, "messages": history}).body["messages"]
    assert messages[-1] == {"role": "tool", "tool_name": "get_weather", "tool_call_id": call["id"],
                            "content": "4 C"}
    assert messages[1]["thinking"] == "Two cities."


@pytest.mark.parametrize(("status", "exception"), [
    (400, anthropic.BadRequestError), (401, anthropic.AuthenticationError),
    (403, anthropic.PermissionDeniedError), (404, anthropic.NotFoundError),
    (413, anthropic.APIStatusError), (429, anthropic.RateLimitError), (500, anthropic.InternalServerError),
    (502, anthropic.InternalServerError), (503, anthropic.InternalServerError),
    (504, anthropic.InternalServerError),
])
def test_sdk_raises_the_right_error_with_our_body(api: FakeApi, client: anthropic.Anthropic, status: int,
                                                  exception: type[Exception]) -> None:
    api.answer_json(anthropic_error("backend says no", status), status)
    with pytest.raises(exception) as caught:
        client.messages.create(model="qwen3", max_tokens=8, messages=[{"role": "user", "content": "Hi"}])
    assert isinstance(caught.value, anthropic.APIStatusError)
    assert caught.value.status_code == status
    assert caught.value.body == anthropic_error("backend says no", status)
    assert "backend says no" in str(caught.value)
