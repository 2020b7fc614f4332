from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic_fakes import FakeApi

from ollama_proxy.core.anthropic import (
    AnthropicRequestError,
    MessagesReply,
    anthropic_error,
    count_tokens_to_native,
    messages_to_native,
)
from ollama_proxy.errors import BadRequest

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                 "required": ["city"]}}
NATIVE_WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city", "parameters": WEATHER_TOOL["input_schema"]}}


def request(**fields: Any) -> dict[str, Any]:
    return {"model": "qwen3", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}], **fields}


def native(**fields: Any) -> dict[str, Any]:
    return messages_to_native(request(**fields)).body


def test_minimal_request_becomes_a_native_chat_call() -> None:
    call = messages_to_native(request())
    assert call.path == "/api/chat"
    assert call.body == {"model": "qwen3", "messages": [{"role": "user", "content": "Hi"}],
                         "options": {"num_predict": 64}, "stream": False}
    assert call.translation == MessagesReply("qwen3", stream=False)


def test_stream_is_passed_on_and_remembered_for_the_reply() -> None:
    call = messages_to_native(request(stream=True))
    assert call.body["stream"] is True
    assert call.translation.stream is True


def test_sampling_fields_become_options_and_only_those_sent() -> None:
    body = native(temperature=0.2, top_p=0.9, top_k=40, stop_sequences=["\n\nHuman:", "END"])
    assert body["options"] == {"num_predict": 64, "temperature": 0.2, "top_p": 0.9, "top_k": 40,
                               "stop": ["\n\nHuman:", "END"]}


def test_empty_stop_sequences_leave_the_modelfile_stop_words_alone() -> None:
    assert "stop" not in native(stop_sequences=[])["options"]


def test_native_options_and_keep_alive_extensions_with_anthropic_fields_winning() -> None:
    body = native(options={"num_ctx": 8192, "temperature": 0.9}, temperature=0.1, keep_alive="5m")
    assert body["options"] == {"num_ctx": 8192, "temperature": 0.1, "num_predict": 64}
    assert body["keep_alive"] == "5m"


def test_metadata_and_unknown_fields_are_ignored() -> None:
    assert native(metadata={"user_id": "u-1"}, service_tier="auto") == native()


@pytest.mark.parametrize("system", ["Be brief.", [{"type": "text", "text": "Be"}, {"type": "text", "text": "brief."}]])
def test_system_prompt_becomes_the_first_native_message(system: Any) -> None:
    messages = native(system=system)["messages"]
    expected = "Be brief." if isinstance(system, str) else "Be\nbrief."
    assert messages == [{"role": "system", "content": expected}, {"role": "user", "content": "Hi"}]


def test_empty_system_prompt_adds_no_message() -> None:
    assert native(system="")["messages"] == [{"role": "user", "content": "Hi"}]


def test_text_and_base64_image_blocks() -> None:
    content = [{"type": "text", "text": "What is"}, {"type": "text", "text": "this?"},
               {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]
    messages = native(messages=[{"role": "user", "content": content}])["messages"]
    assert messages == [{"role": "user", "content": "What is\nthis?", "images": [PNG]}]


HISTORY = [
    {"role": "user", "content": "Weather in Oslo and Bergen?"},
    {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "Two cities, two calls.", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
    ]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"temp_c": 4}'},
        {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
         "content": [{"type": "text", "text": "clock unavailable"}]},
        {"type": "text", "text": "Thanks."},
    ]},
]


def test_assistant_turn_with_thinking_text_and_tool_use() -> None:
    assistant = native(messages=HISTORY)["messages"][1]
    assert assistant == {
        "role": "assistant", "content": "Checking.", "thinking": "Two cities, two calls.",
        "tool_calls": [{"id": "toolu_1", "function": {"index": 0, "name": "get_weather",
                                                      "arguments": {"city": "Oslo"}}},
                       {"id": "toolu_2", "function": {"index": 1, "name": "get_time", "arguments": {}}}]}


def test_tool_results_become_native_tool_messages_named_after_their_call() -> None:
    messages = native(messages=HISTORY)["messages"]
    assert messages[2:] == [
        {"role": "tool", "tool_name": "get_weather", "tool_call_id": "toolu_1", "content": '{"temp_c": 4}'},
        {"role": "tool", "tool_name": "get_time", "tool_call_id": "toolu_2",
         "content": "Error: clock unavailable"},
        {"role": "user", "content": "Thanks."},
    ]


def test_tool_result_with_an_image_and_no_content() -> None:
    history = [*HISTORY[:2], {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]},
        {"type": "tool_result", "tool_use_id": "toolu_2"}]}]
    messages = native(messages=history)["messages"]
    assert messages[2] == {"role": "tool", "tool_name": "get_weather", "tool_call_id": "toolu_1",
                           "content": "", "images": [PNG]}
    assert messages[3]["content"] == ""


def test_blocks_keep_their_order_around_tool_results() -> None:
    history = [*HISTORY[:2], {"role": "user", "content": [
        {"type": "text", "text": "Before."},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "4"},
        {"type": "text", "text": "After."}]}]
    assert [m["role"] for m in native(messages=history)["messages"][2:]] == ["user", "tool", "user"]


def test_tools_become_native_function_tools() -> None:
    body = native(tools=[WEATHER_TOOL, {"name": "noop", "input_schema": {"type": "object"}, "type": "custom"}])
    assert body["tools"] == [NATIVE_WEATHER_TOOL,
                             {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("choice", [None, {"type": "auto"}, {"type": "any", "disable_parallel_tool_use": True}])
def test_tool_choice_auto_and_any_offer_every_tool(choice: Any) -> None:
    assert native(tools=[WEATHER_TOOL], tool_choice=choice)["tools"] == [NATIVE_WEATHER_TOOL]


def test_tool_choice_none_sends_no_tools() -> None:
    assert "tools" not in native(tools=[WEATHER_TOOL], tool_choice={"type": "none"})


def test_tool_choice_tool_offers_only_that_tool() -> None:
    noop = {"name": "noop", "input_schema": {"type": "object"}}
    body = native(tools=[noop, WEATHER_TOOL], tool_choice={"type": "tool", "name": "get_weather"})
    assert body["tools"] == [NATIVE_WEATHER_TOOL]


@pytest.mark.parametrize(("thinking", "think"), [
    ({"type": "enabled", "budget_tokens": 2048}, True),
    ({"type": "disabled"}, False),
])
def test_thinking_becomes_native_think(thinking: dict[str, Any], think: bool) -> None:
    assert native(thinking=thinking)["think"] is think


def test_adaptive_thinking_and_no_thinking_leave_it_to_the_model() -> None:
    assert "think" not in native(thinking={"type": "adaptive"})
    assert "think" not in native()


@pytest.mark.parametrize(("body", "field"), [
    ([1, 2], "body"),
    (request(model=None), "model"),
    (request(model=""), "model"),
    ({"model": "qwen3", "messages": [{"role": "user", "content": "Hi"}]}, "max_tokens"),
    (request(max_tokens=0), "max_tokens"),
    (request(max_tokens="64"), "max_tokens"),
    (request(temperature=1.5), "temperature"),
    (request(top_p="high"), "top_p"),
    (request(top_k=-1), "top_k"),
    (request(stop_sequences="END"), "stop_sequences"),
    (request(stream="yes"), "stream"),
    (request(messages=[]), "messages"),
    (request(messages="Hi"), "messages"),
    (request(messages=["Hi"]), "messages[0]"),
    (request(messages=[{"role": "system", "content": "Hi"}]), "messages[0].role"),
    (request(messages=[{"role": "user", "content": 7}]), "messages[0].content"),
    (request(messages=[{"role": "user", "content": [{"text": "no type"}]}]), "messages[0].content[0]"),
    (request(messages=[{"role": "user", "content": [{"type": "document", "source": {}}]}]),
     "messages[0].content[0]"),
    (request(messages=[{"role": "user", "content": [{"type": "text", "text": None}]}]),
     "messages[0].content[0].text"),
    (request(messages=[{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}]}]),
     "messages[0].content[0]"),
    (request(messages=[{"role": "assistant", "content": [{"type": "image", "source": {}}]}]),
     "messages[0].content[0]"),
    (request(messages=[{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "n",
                                                          "input": "{}"}]}]), "messages[0].content[0].input"),
    (request(messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x"}]}]),
     "messages[0].content[0].tool_use_id"),
    (request(messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}]}]),
     "messages[0].content[0].source.data"),
    (request(system=7), "system"),
    (request(system=[{"type": "image", "source": {}}]), "system[0]"),
    (request(tools={"name": "x"}), "tools"),
    (request(tools=[{"name": "x"}]), "tools[0].input_schema"),
    (request(tools=[{"input_schema": {}}]), "tools[0].name"),
    (request(tools=[{"name": "x", "input_schema": {}, "description": 3}]), "tools[0].description"),
    (request(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools[0]"),
    (request(tools=[WEATHER_TOOL], tool_choice="auto"), "tool_choice"),
    (request(tools=[WEATHER_TOOL], tool_choice={"type": "required"}), "tool_choice"),
    (request(tools=[WEATHER_TOOL], tool_choice={"type": "tool", "name": "other"}), "tool_choice"),
    (request(thinking={"type": "on"}), "thinking"),
    (request(thinking=True), "thinking"),
    (request(thinking={"type": ["enabled"]}), "thinking"),
    (request(tools=[WEATHER_TOOL], tool_choice={"type": ["none"]}), "tool_choice"),
    (request(messages=[{"role": ["user"], "content": "Hi"}]), "messages[0].role"),
    (request(thinking={"type": "enabled"}), "thinking.budget_tokens"),
    (request(options=[1]), "options"),
])
def test_refusals_are_400s_that_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(AnthropicRequestError) as caught:
        messages_to_native(body)
    assert isinstance(caught.value, BadRequest)
    assert caught.value.status == 400
    assert field in str(caught.value)
    assert anthropic_error(str(caught.value), caught.value.status)["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(("source", "word"), [
    ({"type": "url", "url": "https://example.com/cat.png"}, "url"),
    ({"type": "file", "file_id": "file_011"}, "file"),
    ({"type": "svg"}, "base64"),
])
def test_image_sources_other_than_base64_are_refused(source: dict[str, Any], word: str) -> None:
    content = [{"type": "image", "source": source}]
    with pytest.raises(AnthropicRequestError, match=word) as caught:
        messages_to_native(request(messages=[{"role": "user", "content": content}]))
    assert "messages[0].content[0].source" in str(caught.value)


def test_count_tokens_body_needs_no_max_tokens_and_has_no_stream() -> None:
    body = count_tokens_to_native({"model": "qwen3", "system": "Be brief.", "tools": [WEATHER_TOOL],
                                   "messages": [{"role": "user", "content": "Hi"}],
                                   "thinking": {"type": "enabled", "budget_tokens": 1024}})
    assert body == {"model": "qwen3", "messages": [{"role": "system", "content": "Be brief."},
                                                   {"role": "user", "content": "Hi"}],
                    "tools": [NATIVE_WEATHER_TOOL], "think": True}


def test_count_tokens_keeps_a_given_max_tokens_as_the_reply_budget() -> None:
    assert count_tokens_to_native(request())["options"] == {"num_predict": 64}


def test_count_tokens_refusals_are_anthropic_errors() -> None:
    with pytest.raises(AnthropicRequestError, match="messages"):
        count_tokens_to_native({"model": "qwen3"})


# The requests the real SDK builds, translated.

REPLY = {"id": "msg_1", "type": "message", "role": "assistant", "model": "qwen3",
         "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "stop_sequence": None,
         "usage": {"input_tokens": 1, "output_tokens": 1}}


def test_the_sdks_own_request_translates(api: FakeApi, client: anthropic.Anthropic) -> None:
    api.answer_json(REPLY)
    client.messages.create(
        # Newer SDKs dropped `temperature` from create(); older ones and other clients send it as a field.
        model="qwen3", max_tokens=256, system=[{"type": "text", "text": "Be brief."}],
        extra_body={"temperature": 0.3}, stop_sequences=["END"], tools=[WEATHER_TOOL], tool_choice={"type": "auto"},  # type: ignore[list-item]
        thinking={"type": "enabled", "budget_tokens": 1024}, metadata={"user_id": "u-1"},
        messages=[
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "4 C"}]},
        ])
    body = messages_to_native(api.requests[0]).body
    assert body == {
        "model": "qwen3",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather here?", "images": [PNG]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "toolu_9", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Oslo"}}}]},
            {"role": "tool", "tool_name": "get_weather", "tool_call_id": "toolu_9", "content": "4 C"},
        ],
        "tools": [NATIVE_WEATHER_TOOL], "think": True,
        "options": {"num_predict": 256, "temperature": 0.3, "stop": ["END"]}, "stream": False,
    }


def test_the_sdks_count_tokens_request_translates(api: FakeApi, client: anthropic.Anthropic) -> None:
    api.answer_json({"input_tokens": 12})
    counted = client.messages.count_tokens(model="qwen3", system="Be brief.",
                                           messages=[{"role": "user", "content": "Hi"}])
    assert counted.input_tokens == 12
    assert count_tokens_to_native(api.requests[0]) == {
        "model": "qwen3", "messages": [{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": "Hi"}]}


RICH = request(system=[{"type": "text", "text": "Be brief."}], messages=HISTORY, tools=[WEATHER_TOOL],
               tool_choice={"type": "tool", "name": "get_weather"}, stop_sequences=["END"], top_k=5,
               thinking={"type": "enabled", "budget_tokens": 1024}, stream=True)
ODD_VALUES = (None, True, 7, -1.5, "x", "", [], [None], [[]], {}, {"type": []}, {"type": "text"})


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value, as the keys and indexes that lead to it."""
    children: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    return [prefix] + [path for key, child in children for path in paths(child, (*prefix, key))]


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


def test_any_odd_value_anywhere_is_translated_or_refused_as_a_400() -> None:
    """No shape of body makes the translation fail other than with an Anthropic 400."""
    tried = 0
    for path in paths(RICH):
        for odd in ODD_VALUES:
            body = replaced(RICH, path, odd)
            for translate in (messages_to_native, count_tokens_to_native):
                tried += 1
                try:
                    translate(body)
                except AnthropicRequestError as exc:
                    assert exc.status == 400
    assert tried > 1000
