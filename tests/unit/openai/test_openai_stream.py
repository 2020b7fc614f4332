from __future__ import annotations

from typing import Any

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ollama_proxy.core.openai import (
    ReplyContext,
    RequestKind,
    StreamTranslator,
    chat_completion,
)
from ollama_proxy.core.streams import END_OF_STREAM


def run(kind: RequestKind, lines: list[dict[str, Any]], *, include_usage: bool = False,
        close: bool = False) -> list[Any]:
    """Feed native lines; the end marker becomes the string '[DONE]', as a client reads it."""
    translator = StreamTranslator(ReplyContext(kind, "llama3.2", stream=True, include_usage=include_usage),
                                  completion_id="chatcmpl-417", created=1787390000)
    events = [event for line in lines for event in translator.feed(line)]
    if close:
        events += translator.close()
    return ["[DONE]" if event is END_OF_STREAM else event for event in events]


HELLO = [
    {"model": "llama3.2", "message": {"role": "assistant", "content": "Hello"}, "done": False},
    {"model": "llama3.2", "message": {"role": "assistant", "content": "!"}, "done": False},
    {"model": "llama3.2", "message": {"role": "assistant", "content": ""}, "done": True,
     "done_reason": "stop", "prompt_eval_count": 11, "eval_count": 3},
]


def deltas(events: list[Any]) -> list[dict[str, Any]]:
    return [e["choices"][0]["delta"] for e in events if isinstance(e, dict) and e.get("choices")]


def test_chat_stream_sequence_with_usage() -> None:
    # Reference 8.11, plus a role chunk of its own as the OpenAI API sends it.
    events = run(RequestKind.CHAT, HELLO, include_usage=True)
    assert deltas(events) == [{"role": "assistant", "content": ""}, {"content": "Hello"}, {"content": "!"},
                              {}]
    assert [e["choices"][0]["finish_reason"] for e in events[:4]] == [None, None, None, "stop"]
    assert events[4]["choices"] == []
    assert events[4]["usage"] == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    assert events[5] == "[DONE]"
    assert len(events) == 6
    for chunk in events[:5]:
        ChatCompletionChunk.model_validate(chunk)
        assert (chunk["id"], chunk["created"], chunk["object"]) == (
            "chatcmpl-417", 1787390000, "chat.completion.chunk")


def test_chat_stream_without_usage_has_no_usage_chunk() -> None:
    events = run(RequestKind.CHAT, HELLO)
    assert events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])
    assert events[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


def test_thinking_and_content_on_one_line_are_split() -> None:
    events = run(RequestKind.CHAT, [
        {"message": {"thinking": "Let me", "content": "Four"}, "done": False},
        {"message": {"content": ""}, "done": True, "done_reason": "stop"},
    ])
    assert deltas(events) == [{"role": "assistant", "content": ""}, {"reasoning": "Let me"},
                              {"content": "Four"}, {}]


def test_tool_calls_stream_with_running_index_and_finish_reason() -> None:
    events = run(RequestKind.CHAT, [
        {"message": {"content": "", "tool_calls": [
            {"id": "call_a",
             "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Oslo"}}}]},
         "done": False},
        {"message": {"content": "", "tool_calls": [
            {"function": {"index": 0, "name": "get_time", "arguments": {"tz": "UTC"}}}]},
         "done": True, "done_reason": "stop"},
    ])
    calls = [d["tool_calls"] for d in deltas(events) if "tool_calls" in d]
    assert calls == [
        [{"index": 0, "id": "call_a", "type": "function",
          "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}],
        [{"index": 1, "id": "call_417_1", "type": "function",
          "function": {"name": "get_time", "arguments": '{"tz":"UTC"}'}}],
    ]
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"
    for chunk in events[:-1]:
        ChatCompletionChunk.model_validate(chunk)


def test_native_error_line_becomes_error_event_without_done() -> None:
    events = run(RequestKind.CHAT, [HELLO[0], {"error": "an error was encountered while running the model"}])
    assert deltas(events) == [{"role": "assistant", "content": ""}, {"content": "Hello"}]
    assert events[-1] == {"error": {"message": "an error was encountered while running the model",
                                    "type": "api_error", "param": None, "code": None}}
    assert "[DONE]" not in events


def test_close_after_done_adds_nothing() -> None:
    assert run(RequestKind.CHAT, HELLO, close=True)[-1] == "[DONE]"


def test_close_of_unfinished_stream_is_an_error_event() -> None:
    events = run(RequestKind.CHAT, HELLO[:2], close=True)
    assert events[-1]["error"]["message"] == "the backend closed the stream before it finished"
    assert events[-1]["error"]["type"] == "api_error"
    assert "[DONE]" not in events


def test_abort_is_once_and_feed_after_end_is_ignored() -> None:
    translator = StreamTranslator(ReplyContext(RequestKind.CHAT, "m", stream=True),
                                  completion_id="c", created=0)
    [error] = translator.abort("client went away", 499)
    assert isinstance(error, dict) and error["error"]["message"] == "client went away"
    assert translator.finished
    assert translator.abort("again") == []
    assert translator.feed(HELLO[0]) == []
    assert translator.close() == []


def test_text_completion_stream() -> None:
    events = run(RequestKind.COMPLETION, [
        {"response": "Seven", "done": False},
        {"response": "", "done": False},
        {"response": ".", "done": False},
        {"response": "", "done": True, "done_reason": "length", "prompt_eval_count": 31, "eval_count": 2},
    ], include_usage=True)
    assert [e["choices"][0]["text"] for e in events[:3]] == ["Seven", ".", ""]
    assert [e["choices"][0]["finish_reason"] for e in events[:3]] == [None, None, "length"]
    assert events[3]["choices"] == [] and events[3]["usage"]["total_tokens"] == 33
    assert events[4] == "[DONE]"
    assert all(chunk["object"] == "text_completion" for chunk in events[:4])
    # The SDK's model types finish_reason without null, so only the finish and usage chunks validate.
    for chunk in events[2:4]:
        Completion.model_validate(chunk)


def test_embeddings_cannot_stream_but_translate_whole() -> None:
    translator = StreamTranslator(ReplyContext(RequestKind.EMBEDDING, "m"), completion_id="x", created=0)
    assert translator.whole({"embeddings": [[0.5]], "prompt_eval_count": 2})["data"][0]["embedding"] == [0.5]
    with pytest.raises(ValueError, match="never streamed"):
        translator.feed({"done": True})


def test_non_streamed_reply_matches_sdk_model() -> None:
    native = {"message": {"content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
              "done": True, "done_reason": "stop", "prompt_eval_count": 1, "eval_count": 2}
    reply = ChatCompletion.model_validate(chat_completion(native, ReplyContext(RequestKind.CHAT, "m"),
                                                          completion_id="chatcmpl-1", created=3))
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "f" and call.function.arguments == '{"a":1}'
    assert reply.usage is not None and reply.usage.total_tokens == 3
