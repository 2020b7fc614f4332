from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from ollama_proxy.core.openai import (
    REVERSE_TRANSLATORS,
    BackendReplyError,
    NativeKind,
    NativeReplyContext,
    NativeStreamTranslator,
    SseDecoder,
    SseEvent,
    chat_to_native,
    chat_to_openai,
    embed_to_openai,
    generate_to_openai,
    is_load_only,
    load_only_reply,
    native_error,
    native_reply,
    tags_from_models,
)
from ollama_proxy.core.openai.reverse_responses import CUT_STREAM, EMPTY_STREAM, created_at
from ollama_proxy.core.operations import Operation
from ollama_proxy.errors import BadRequest

T0 = 1787390000.0
USER = [{"role": "user", "content": "hi"}]


def test_chat_request_defaults_to_stream_with_usage() -> None:
    request = chat_to_openai({"model": "tiny", "messages": USER})
    assert request.path == "/v1/chat/completions"
    assert request.body == {"model": "tiny", "messages": USER, "stream": True,
                            "stream_options": {"include_usage": True}}
    assert request.context == NativeReplyContext(NativeKind.CHAT, "tiny", "/v1/chat/completions", True)


@pytest.mark.parametrize("native,openai", [
    pytest.param({"options": {"num_predict": 8, "temperature": 0, "top_k": 5, "seed": 3, "stop": ["x"]}},
                 {"max_tokens": 8, "temperature": 0, "top_k": 5, "seed": 3, "stop": ["x"]}, id="options"),
    pytest.param({"options": {"num_predict": -1, "num_ctx": 8192, "num_gpu": 0}}, {},
                 id="unbounded-and-load-time-dropped"),
    pytest.param({"format": "json"}, {"response_format": {"type": "json_object"}}, id="format-json"),
    pytest.param({"format": {"type": "object"}},
                 {"response_format": {"type": "json_schema",
                                      "json_schema": {"name": "response", "schema": {"type": "object"}}}},
                 id="format-schema"),
    pytest.param({"tools": [{"type": "function", "function": {"name": "f"}}]},
                 {"tools": [{"type": "function", "function": {"name": "f"}}]}, id="tools"),
    pytest.param({"keep_alive": "5m", "think": True}, {}, id="ollama-only-knobs-dropped"),
])
def test_chat_request_fields(native: dict[str, Any], openai: dict[str, Any]) -> None:
    body = chat_to_openai({"model": "m", "messages": USER, "stream": False, **native}).body
    assert {k: v for k, v in body.items() if k not in ("model", "messages", "stream")} == openai


def test_messages_with_images_and_tool_round() -> None:
    messages = [
        {"role": "user", "content": "look", "images": ["iVBORw0KGgoAAA", "/9j/4AAQ"]},
        {"role": "assistant", "content": "", "thinking": "hm",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
                        {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]},
        {"role": "tool", "tool_name": "get_weather", "content": "rain"},
        {"role": "tool", "tool_name": "get_weather", "content": "sun"},
    ]
    converted = chat_to_openai({"model": "m", "messages": messages}).body["messages"]
    assert converted[0]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAA"}},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
    ]
    assert converted[1] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1_0", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        {"id": "call_1_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
    ]}
    # Results carrying only a tool name answer the calls in order.
    assert converted[2] == {"role": "tool", "content": "rain", "tool_call_id": "call_1_0",
                            "name": "get_weather"}
    assert converted[3]["tool_call_id"] == "call_1_1"


def test_tool_calls_round_trip_openai_native_openai() -> None:
    openai_messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_x", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Oslo","days":[1,2]}'}}]},
        {"role": "tool", "tool_call_id": "call_x", "content": "rain"},
    ]
    native = chat_to_native({"model": "m", "messages": openai_messages}).body["messages"]
    back = chat_to_openai({"model": "m", "messages": native}).body["messages"]
    assert back[1]["tool_calls"] == openai_messages[1]["tool_calls"]
    assert back[2] == {"role": "tool", "content": "rain", "tool_call_id": "call_x", "name": "get_weather"}


@pytest.mark.parametrize("native,path,body", [
    pytest.param({"prompt": "Name one prime.", "system": "Be brief.", "images": ["R0lGODlh"]},
                 "/v1/chat/completions",
                 {"messages": [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": [
                                   {"type": "text", "text": "Name one prime."},
                                   {"type": "image_url",
                                    "image_url": {"url": "data:image/gif;base64,R0lGODlh"}}]}]},
                 id="templated-generate-is-chat"),
    pytest.param({"prompt": "def f(", "suffix": "return x", "raw": True}, "/v1/completions",
                 {"prompt": "def f(", "suffix": "return x"}, id="suffix-is-completion"),
    pytest.param({"prompt": "<s>raw", "raw": True}, "/v1/completions", {"prompt": "<s>raw"}, id="raw"),
])
def test_generate_request(native: dict[str, Any], path: str, body: dict[str, Any]) -> None:
    request = generate_to_openai({"model": "m", "stream": False, **native})
    assert request.path == path
    assert request.body == {"model": "m", "stream": False, **body}
    assert request.context.kind is NativeKind.GENERATE


def test_embed_request() -> None:
    request = embed_to_openai({"model": "e", "input": ["a", "b"], "dimensions": 4, "truncate": False})
    assert (request.path, request.body) == ("/v1/embeddings", {"model": "e", "input": ["a", "b"],
                                                               "encoding_format": "float", "dimensions": 4})


@pytest.mark.parametrize("path,body", [
    pytest.param("/api/chat", {"messages": USER}, id="chat-no-model"),
    pytest.param("/api/generate", {"model": "m", "prompt": 5}, id="prompt-not-string"),
    pytest.param("/api/generate", {"model": "m", "prompt": "x", "raw": True, "images": ["x"]},
                 id="raw-with-images"),
    pytest.param("/api/embed", {"model": "m", "input": [1, 2]}, id="embed-tokens"),
    pytest.param("/api/chat", {"model": "m", "messages": USER, "options": [1]}, id="options-not-object"),
])
def test_reverse_request_errors(path: str, body: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        REVERSE_TRANSLATORS[Operation(path.rsplit("/", 1)[1])](body)


@pytest.mark.parametrize("kind,body,expected", [
    pytest.param(NativeKind.GENERATE, {"model": "m"}, True, id="generate-no-prompt"),
    pytest.param(NativeKind.CHAT, {"model": "m", "messages": []}, True, id="chat-no-messages"),
    pytest.param(NativeKind.CHAT, {"model": "m", "messages": USER}, False, id="chat"),
    pytest.param(NativeKind.EMBED, {"model": "m"}, False, id="embed"),
])
def test_is_load_only(kind: NativeKind, body: dict[str, Any], expected: bool) -> None:
    assert is_load_only(kind, body) is expected


def test_load_only_reply() -> None:
    reply = load_only_reply(NativeReplyContext(NativeKind.GENERATE, "m", "/v1/chat/completions"), T0)
    assert reply == {"model": "m", "created_at": "2026-08-22T09:13:20.000000Z", "response": "",
                     "done": True, "done_reason": "load"}


CHAT_CTX = NativeReplyContext(NativeKind.CHAT, "tiny", "/v1/chat/completions")
GEN_CHAT_CTX = NativeReplyContext(NativeKind.GENERATE, "tiny", "/v1/chat/completions")
GEN_TEXT_CTX = NativeReplyContext(NativeKind.GENERATE, "tiny", "/v1/completions")
USAGE = {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}


def test_chat_reply_with_tool_calls_and_reasoning() -> None:
    openai = {"id": "x", "object": "chat.completion", "model": "whatever", "usage": USAGE,
              "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                  "role": "assistant", "content": None, "reasoning_content": "think",
                  "tool_calls": [{"id": "call_1", "type": "function",
                                  "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]}}]}
    reply = native_reply(openai, CHAT_CTX, started=T0, now=T0 + 0.25)
    assert reply == {"model": "tiny", "created_at": created_at(T0 + 0.25),
                     "message": {"role": "assistant", "content": "", "thinking": "think",
                                 "tool_calls": [{"id": "call_1", "function": {
                                     "index": 0, "name": "get_weather", "arguments": {"city": "Oslo"}}}]},
                     "done": True, "done_reason": "stop", "total_duration": 250_000_000,
                     "prompt_eval_count": 12, "eval_count": 4}


@pytest.mark.parametrize("context,choice,field", [
    pytest.param(GEN_CHAT_CTX, {"message": {"content": "Seven."}, "finish_reason": "length"}, "response",
                 id="generate-via-chat"),
    pytest.param(GEN_TEXT_CTX, {"text": "Seven.", "finish_reason": "length"}, "response",
                 id="generate-via-completions"),
])
def test_generate_reply(context: NativeReplyContext, choice: dict[str, Any], field: str) -> None:
    reply = native_reply({"choices": [choice]}, context, started=T0, now=T0 + 1)
    assert reply[field] == "Seven."
    assert reply["done_reason"] == "length"
    assert "prompt_eval_count" not in reply and "message" not in reply


@pytest.mark.parametrize("openai", [
    pytest.param({"choices": []}, id="no-choices"),
    pytest.param({"choices": [{"message": {"tool_calls": [
        {"function": {"name": "f", "arguments": "{oops"}}]}}]}, id="bad-tool-arguments"),
])
def test_reply_errors(openai: dict[str, Any]) -> None:
    with pytest.raises(BackendReplyError):
        native_reply(openai, CHAT_CTX, started=T0, now=T0)


def test_embed_reply_is_ordered_and_normalised() -> None:
    openai = {"object": "list", "usage": {"prompt_tokens": 6, "total_tokens": 6},
              "data": [{"index": 1, "embedding": [0.0, 2.0]}, {"index": 0, "embedding": [3.0, 4.0]}]}
    reply = native_reply(openai, NativeReplyContext(NativeKind.EMBED, "e", "/v1/embeddings"),
                         started=T0, now=T0 + 0.5)
    assert reply == {"model": "e", "embeddings": [[0.6, 0.8], [0.0, 1.0]], "total_duration": 500_000_000,
                     "prompt_eval_count": 6}
    assert all(math.isclose(math.hypot(*v), 1.0) for v in reply["embeddings"])


@pytest.mark.parametrize("status,body,message", [
    pytest.param(400, {"error": {"message": "too long", "type": "invalid_request_error",
                                 "code": "context_length_exceeded"}}, "too long", id="openai-shape"),
    pytest.param(404, {"detail": "Not Found"}, "Not Found", id="fastapi-detail"),
    pytest.param(500, {"detail": [{"loc": ["body", "x"]}]}, '[{"loc":["body","x"]}]', id="validation-list"),
    pytest.param(502, "bad gateway", "bad gateway", id="text"),
    pytest.param(503, None, "backend answered HTTP 503", id="nothing"),
])
def test_native_error(status: int, body: Any, message: str) -> None:
    assert native_error(status, body) == (status, {"error": message})


def test_tags_from_models() -> None:
    tags = tags_from_models({"object": "list", "data": [{"id": "tiny", "object": "model", "created": T0,
                                                          "owned_by": "me"}]})
    assert tags["models"][0]["name"] == tags["models"][0]["model"] == "tiny"
    assert tags["models"][0]["modified_at"] == "2026-08-22T09:13:20.000000Z"
    assert tags_from_models({"data": None}) == {"models": []}


def sse(*chunks: dict[str, Any] | str) -> list[SseEvent]:
    return [SseEvent(data=c if isinstance(c, str) else orjson.dumps(c).decode()) for c in chunks]


def chat_delta(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def translate(context: NativeReplyContext, events: list[SseEvent], *,
              close: bool = True) -> list[dict[str, Any]]:
    translator = NativeStreamTranslator(context, started=T0)
    lines = [line for n, event in enumerate(events)
             for line in translator.feed(event, T0 + 0.125 * (n + 1))]
    return lines + (translator.close(T0 + 10) if close else [])


def test_chat_stream_to_ndjson_with_usage_after_finish() -> None:
    lines = translate(CHAT_CTX, sse(
        chat_delta({"role": "assistant", "content": ""}),
        chat_delta({"content": "Hel"}),
        chat_delta({"reasoning_content": "hm"}),
        chat_delta({"content": "lo"}),
        chat_delta({}, "stop"),
        {"choices": [], "usage": USAGE},
        "[DONE]",
    ))
    assert [line["message"] for line in lines[:-1]] == [
        {"role": "assistant", "content": "Hel"}, {"role": "assistant", "content": "", "thinking": "hm"},
        {"role": "assistant", "content": "lo"}]
    assert all(line["done"] is False and line["model"] == "tiny" for line in lines[:-1])
    final = lines[-1]
    # Events arrive every 0.125 s (exact in binary): first token at the 2nd, [DONE] at the 7th.
    assert final == {"model": "tiny", "created_at": created_at(T0 + 0.875),
                     "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
                     "total_duration": 875_000_000, "prompt_eval_duration": 250_000_000,
                     "eval_duration": 625_000_000, "prompt_eval_count": 12, "eval_count": 4}


def test_tool_call_fragments_are_joined_on_the_final_line() -> None:
    lines = translate(CHAT_CTX, sse(
        chat_delta({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                    "function": {"name": "get_weather", "arguments": ""}}]}),
        chat_delta({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chat_delta({"tool_calls": [{"index": 0, "function": {"arguments": ' "Oslo"}'}}]}),
        chat_delta({"tool_calls": [{"index": 1, "id": "call_b",
                                    "function": {"name": "now", "arguments": "{}"}}]}),
        chat_delta({}, "tool_calls"),
        "[DONE]",
    ))
    assert len(lines) == 1
    assert lines[0]["message"]["tool_calls"] == [
        {"id": "call_a", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Oslo"}}},
        {"id": "call_b", "function": {"index": 1, "name": "now", "arguments": {}}}]
    assert lines[0]["done_reason"] == "stop"


def test_generate_stream_from_completions() -> None:
    lines = translate(GEN_TEXT_CTX, sse(
        {"choices": [{"index": 0, "text": "Sev", "finish_reason": None}]},
        {"choices": [{"index": 0, "text": "en", "finish_reason": "length"}]},
        "[DONE]",
    ))
    assert [line["response"] for line in lines] == ["Sev", "en", ""]
    assert lines[-1]["done"] is True and lines[-1]["done_reason"] == "length"


@pytest.mark.parametrize("events,message", [
    pytest.param([], EMPTY_STREAM, id="llama-cpp-empty-stream-prompt-too-long"),
    pytest.param(sse(chat_delta({"content": "Hel"})), EMPTY_STREAM, id="eof-mid-answer"),
    pytest.param(sse(chat_delta({"content": "Hel"}), "[DONE]"), CUT_STREAM, id="done-without-finish"),
    pytest.param(sse({"error": {"message": "boom", "type": "server_error"}}), "boom", id="error-event"),
    pytest.param(sse("not json"), "the backend sent an event that is not JSON: 'not json'", id="not-json"),
])
def test_stream_failures_end_with_one_error_line(events: list[SseEvent], message: str) -> None:
    lines = translate(CHAT_CTX, events)
    assert lines[-1] == {"error": message}
    assert not any(line.get("done") for line in lines)


def test_finish_without_done_still_completes_at_eof() -> None:
    lines = translate(CHAT_CTX, sse(chat_delta({"content": "Hi"}, "stop")))
    assert lines[-1]["done"] is True and "error" not in lines[-1]


def test_events_after_the_end_are_ignored() -> None:
    translator = NativeStreamTranslator(CHAT_CTX, started=T0)
    assert translator.feed(sse(chat_delta({}, "stop"))[0], T0) == []
    assert translator.feed(SseEvent(data="[DONE]"), T0)[0]["done"] is True
    assert translator.finished
    assert translator.feed(sse(chat_delta({"content": "late"}))[0], T0) == []
    assert translator.close(T0) == []


def test_stream_from_raw_bytes_split_anywhere() -> None:
    raw = (b'data: {"choices":[{"index":0,"delta":{"content":"a\\u00e9"},"finish_reason":null}]}\r\n\r\n'
           b': ping\r\n\r\n'
           b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\r\n\r\ndata: [DONE]\r\n\r\n')
    for cut in range(1, len(raw)):
        decoder = SseDecoder()
        events = decoder.feed(raw[:cut]) + decoder.feed(raw[cut:]) + decoder.flush()
        lines = translate(CHAT_CTX, events)
        assert [line["message"]["content"] for line in lines] == ["aé", ""]
