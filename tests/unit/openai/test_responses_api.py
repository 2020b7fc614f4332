"""The Responses API request as a native `/api/chat` call, each refusal, and the whole reply as the SDK's
`Response` model reads it."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from openai.types.responses import Response

from ollama_proxy.core.openai import OpenAIRequestError, ResponsesContext, responses_to_native

PNG = "iVBORw0KGgoAAAANSUhEUg"


def native(body: dict[str, Any]) -> dict[str, Any]:
    return responses_to_native({"model": "llama3.2", **body}).body


def refusal(body: Any) -> OpenAIRequestError:
    with pytest.raises(OpenAIRequestError) as caught:
        responses_to_native(body)
    assert caught.value.status == 400
    return caught.value


def test_a_string_input_is_one_user_message_and_no_options_are_invented() -> None:
    call = responses_to_native({"model": "llama3.2", "input": "Hi"})
    assert call.path == "/api/chat"
    assert call.body == {"model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}], "stream": False}
    assert call.translation.stream is False


def test_instructions_become_the_first_system_message() -> None:
    messages = native({"instructions": "Be brief.", "input": "Hi"})["messages"]
    assert messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_message_items_with_and_without_type_and_every_role() -> None:
    messages = native({"input": [
        {"type": "message", "role": "developer", "content": "Rules."},
        {"role": "system", "content": [{"type": "input_text", "text": "More rules."}]},
        {"role": "user", "content": [{"type": "input_text", "text": "Look:"},
                                     {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "A cat.", "annotations": []}]},
    ]})["messages"]
    assert messages == [
        {"role": "system", "content": "Rules."},
        {"role": "system", "content": "More rules."},
        {"role": "user", "content": "Look:", "images": [PNG]},
        {"role": "assistant", "content": "A cat."},
    ]


def test_function_calls_join_the_assistant_turn_and_outputs_find_their_tool_name() -> None:
    messages = native({"input": [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Checking."},
        {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "weather",
         "arguments": '{"city": "Paris"}', "status": "completed"},
        {"type": "function_call", "call_id": "call_b", "name": "weather", "arguments": '{"city": "Rome"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "18C"},
        {"type": "function_call_output", "call_id": "call_b",
         "output": [{"type": "input_text", "text": "21C"}]},
    ]})["messages"]
    assert messages[1] == {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "call_a", "function": {"index": 0, "name": "weather", "arguments": {"city": "Paris"}}},
        {"id": "call_b", "function": {"index": 1, "name": "weather", "arguments": {"city": "Rome"}}},
    ]}
    assert messages[2:] == [
        {"role": "tool", "content": "18C", "tool_name": "weather", "tool_call_id": "call_a"},
        {"role": "tool", "content": "21C", "tool_name": "weather", "tool_call_id": "call_b"},
    ]


def test_a_function_call_after_a_user_message_opens_an_assistant_turn() -> None:
    messages = native({"input": [
        {"role": "user", "content": "Time?"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Use the clock."}]},
        {"type": "function_call", "call_id": "c1", "name": "clock", "arguments": ""},
    ]})["messages"]
    assert messages[1] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "function": {"index": 0, "name": "clock", "arguments": {}}}]}
    assert len(messages) == 2  # the reasoning item is dropped


def test_function_tools_and_tool_choice() -> None:
    weather = {"type": "function", "name": "weather", "description": "Weather now",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": True}
    clock = {"type": "function", "name": "clock"}
    native_weather = {"type": "function", "function": {"name": "weather", "description": "Weather now",
                                                       "parameters": weather["parameters"]}}
    native_clock = {"type": "function", "function": {"name": "clock"}}
    assert native({"input": "x", "tools": [weather, clock]})["tools"] == [native_weather, native_clock]
    assert native({"input": "x", "tools": [weather, clock], "tool_choice": "required"})["tools"] == \
        [native_weather, native_clock]
    assert "tools" not in native({"input": "x", "tools": [weather], "tool_choice": "none"})
    assert native({"input": "x", "tools": [weather, clock],
                   "tool_choice": {"type": "function", "name": "clock"}})["tools"] == [native_clock]
    allowed = {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "weather"}]}
    assert native({"input": "x", "tools": [weather, clock], "tool_choice": allowed})["tools"] == [native_weather]


@pytest.mark.parametrize(("fields", "wanted"), [
    ({"max_output_tokens": 64}, {"options": {"num_predict": 64}}),
    ({"temperature": 0.2, "top_p": 0.9}, {"options": {"temperature": 0.2, "top_p": 0.9}}),
    ({"options": {"num_ctx": 8192}, "max_output_tokens": 5}, {"options": {"num_ctx": 8192, "num_predict": 5}}),
    ({"reasoning": {"effort": "high"}}, {"think": "high"}),
    ({"reasoning": {"effort": "none"}}, {"think": False}),
    ({"think": True}, {"think": True}),
    ({"text": {"format": {"type": "json_object"}}}, {"format": "json"}),
    ({"text": {"format": {"type": "json_schema", "name": "city", "schema": {"type": "object"}}}},
     {"format": {"type": "object"}}),
    ({"text": {"format": {"type": "text"}, "verbosity": "low"}}, {}),
    ({"stream": True}, {"stream": True}),
    ({"keep_alive": "5m"}, {"keep_alive": "5m"}),
    ({"parallel_tool_calls": False, "metadata": {"k": "v"}, "user": "u1", "truncation": "auto", "store": False,
      "include": ["reasoning.encrypted_content"], "background": False, "previous_response_id": None}, {}),
])
def test_request_fields(fields: dict[str, Any], wanted: dict[str, Any]) -> None:
    body = native({"input": "Hi", **fields})
    assert body == {"model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}], "stream": False,
                    **wanted}


def test_the_stream_flag_reaches_the_translation() -> None:
    call = responses_to_native({"model": "m", "input": "Hi", "stream": True})
    assert call.body["stream"] is True and call.translation.stream is True


@pytest.mark.parametrize(("body", "param", "words"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id", "send the whole conversation in 'input'"),
    ({"conversation": "conv_1"}, "conversation", "stateless"),
    ({"store": True}, "store", "store: false"),
    ({"background": True}, "background", "stream: true"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt", "stateless"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", "send the item itself"),
])
def test_state_the_proxy_does_not_keep_is_refused_with_what_to_send_instead(
        body: dict[str, Any], param: str, words: str) -> None:
    error = refusal({"model": "m", "input": "Hi", **body})
    assert error.param == param
    assert "stateless" in str(error) and words in str(error)
    status, payload = error.response()
    assert status == 400 and payload["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(("body", "param"), [
    ([], None),
    ({"input": "Hi"}, "model"),
    ({"model": "m"}, "input"),
    ({"model": "m", "input": []}, "input"),
    ({"model": "m", "input": [{"type": "reasoning", "summary": []}]}, "input"),
    ({"model": "m", "input": [7]}, "input[0]"),
    ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"model": "m", "input": [{"role": "user", "content": 5}]}, "input[0].content"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0]"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0]"),
    ({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "https://example.com/cat.png"}]}]}, "input[0].content[0]"),
    ({"model": "m", "input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0]"),
    ({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0]"),
    ({"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]},
     "input[0].arguments"),
    ({"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]},
     "input[0].call_id"),
    ({"model": "m", "input": "x", "tools": {"type": "function"}}, "tools"),
    ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0]"),
    ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}],
      "tool_choice": {"type": "function", "name": "g"}}, "tool_choice"),
    ({"model": "m", "input": "x", "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "grammar"}}}, "text.format"),
    ({"model": "m", "input": "x", "reasoning": {"effort": "huge"}}, "reasoning_effort"),
    ({"model": "m", "input": "x", "reasoning": "high"}, "reasoning"),
    ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "m", "input": "x", "temperature": "hot"}, "temperature"),
    ({"model": "m", "input": "x", "truncation": "middle"}, "truncation"),
    ({"model": "m", "input": "x", "store": "yes"}, "store"),
])
def test_invalid_requests_are_400s_naming_the_parameter(body: Any, param: str | None) -> None:
    assert refusal(body).param == param


def test_hosted_tools_are_refused_with_a_clear_message() -> None:
    error = refusal({"model": "m", "input": "x", "tools": [{"type": "web_search"}]})
    assert "'web_search' tools are not supported" in str(error) and "only function tools" in str(error)


# Whole replies.

WEATHER = {"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {}}}


def whole(native_reply: dict[str, Any], **request: Any) -> dict[str, Any]:
    call = responses_to_native({"model": "llama3.2", "input": "Hi", **request})
    translator = call.translation.translator(rng=random.Random(7), now=1787390000.5)
    reply = translator.whole(native_reply)
    Response.model_validate(reply)
    orjson.dumps(reply)
    return reply


def done(message: dict[str, Any], reason: str = "stop") -> dict[str, Any]:
    return {"model": "llama3.2", "message": {"role": "assistant", **message}, "done": True, "done_reason": reason,
            "prompt_eval_count": 12, "eval_count": 5}


def test_a_text_reply_is_a_completed_response_with_one_message() -> None:
    reply = whole(done({"content": "Hello!"}))
    assert reply["id"].startswith("resp_") and reply["object"] == "response"
    assert reply["created_at"] == 1787390000 and reply["status"] == "completed" and reply["model"] == "llama3.2"
    assert reply["incomplete_details"] is None and reply["error"] is None
    [message] = reply["output"]
    assert message["type"] == "message" and message["id"].startswith("msg_")
    assert message["status"] == "completed" and message["role"] == "assistant"
    assert message["content"] == [{"type": "output_text", "text": "Hello!", "annotations": []}]
    assert reply["usage"] == {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17,
                              "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                              "output_tokens_details": {"reasoning_tokens": 0}}
    assert Response.model_validate(reply).output_text == "Hello!"


def test_the_reply_repeats_the_request_settings() -> None:
    reply = whole(done({"content": "{}"}), instructions="Be brief.", tools=[WEATHER], tool_choice="required",
                  parallel_tool_calls=False, temperature=0.5, top_p=0.8, max_output_tokens=99, metadata={"k": "v"},
                  user="u1", reasoning={"effort": "low"},
                  text={"format": {"type": "json_schema", "schema": {"type": "object"}}})
    assert reply["instructions"] == "Be brief." and reply["tool_choice"] == "required"
    assert reply["tools"] == [{"type": "function", "name": "weather", "description": None,
                               "parameters": WEATHER["parameters"], "strict": None}]
    assert reply["parallel_tool_calls"] is False
    assert (reply["temperature"], reply["top_p"], reply["max_output_tokens"]) == (0.5, 0.8, 99)
    assert reply["metadata"] == {"k": "v"} and reply["user"] == "u1" and reply["store"] is False
    assert reply["reasoning"] == {"effort": "low", "summary": None}
    assert reply["text"]["format"] == {"type": "json_schema", "name": "response", "schema": {"type": "object"}}
    defaults = whole(done({"content": "x"}))
    assert defaults["tools"] == [] and defaults["tool_choice"] == "auto" and defaults["parallel_tool_calls"] is True
    assert defaults["text"] == {"format": {"type": "text"}} and defaults["truncation"] == "disabled"


def test_thinking_becomes_a_reasoning_item_before_the_message() -> None:
    reply = whole(done({"thinking": "The user greets.", "content": "Hi!"}))
    reasoning, message = reply["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"].startswith("rs_")
    assert reasoning["summary"] == [{"type": "summary_text", "text": "The user greets."}]
    assert message["content"][0]["text"] == "Hi!"


def test_tool_calls_are_function_call_items_with_json_string_arguments() -> None:
    reply = whole(done({"content": "", "tool_calls": [
        {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
        {"id": "call_native", "function": {"name": "clock", "arguments": {}}},
    ]}), tools=[WEATHER])
    first, second = reply["output"]  # no empty message beside the calls
    assert first["type"] == "function_call" and first["id"].startswith("fc_")
    assert first["call_id"].startswith("call_") and first["name"] == "weather"
    assert orjson.loads(first["arguments"]) == {"city": "Paris"} and first["status"] == "completed"
    assert second["call_id"] == "call_native" and second["arguments"] == "{}"
    assert reply["status"] == "completed"


def test_text_and_tool_calls_keep_both() -> None:
    reply = whole(done({"content": "Let me check.", "tool_calls": [{"function": {"name": "clock", "arguments": {}}}]}))
    assert [item["type"] for item in reply["output"]] == ["message", "function_call"]


def test_an_empty_reply_still_has_its_message() -> None:
    reply = whole(done({"content": ""}))
    assert reply["output"][0]["content"] == [{"type": "output_text", "text": "", "annotations": []}]


def test_a_reply_cut_by_the_token_limit_is_incomplete() -> None:
    reply = whole(done({"content": "Once upon"}, reason="length"))
    assert reply["status"] == "incomplete"
    assert reply["incomplete_details"] == {"reason": "max_output_tokens"}
    assert reply["output"][0]["status"] == "incomplete"


def test_ids_come_from_the_rng() -> None:
    assert whole(done({"content": "x"})) == whole(done({"content": "x"}))


def test_native_errors_become_openai_errors_with_the_status_kept() -> None:
    translator = responses_to_native({"model": "m", "input": "x"}).translation.translator(
        rng=random.Random(1), now=0)
    status, body = translator.error(404, {"error": "model 'm' not found"})
    assert status == 404 and body["error"]["message"] == "model 'm' not found"
    assert body["error"]["type"] == "not_found_error"
    assert translator.error(500, "oops")[1]["error"]["message"] == "the backend answered with HTTP status 500"


def test_the_translation_is_a_responses_context() -> None:
    assert isinstance(responses_to_native({"model": "m", "input": "x"}).translation, ResponsesContext)
