from __future__ import annotations

from typing import Any

import pytest

from ollama_proxy.core.openai import (
    OpenAIRequestError,
    RequestKind,
    chat_to_native,
    completion_to_native,
    embeddings_to_native,
)
from ollama_proxy.core.operations import Dialect, Operation
from ollama_proxy.core.translators import TRANSLATORS
from ollama_proxy.errors import BadRequest

USER = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "messages": USER, **fields}


def test_minimal_chat_sends_no_options() -> None:
    # Ollama's own /v1 layer sends temperature and top_p 1.0 here, overriding the Modelfile.
    request = chat_to_native(chat())
    assert request.path == "/api/chat"
    assert request.body == {"model": "llama3.2", "messages": USER, "stream": False}
    assert request.translation.kind is RequestKind.CHAT
    assert request.translation.model == "llama3.2"
    assert not request.translation.stream and not request.translation.include_usage


@pytest.mark.parametrize("fields,options", [
    pytest.param({"max_tokens": 10}, {"num_predict": 10}, id="max_tokens"),
    pytest.param({"max_completion_tokens": 12}, {"num_predict": 12}, id="max_completion_tokens"),
    pytest.param({"max_tokens": 10, "max_completion_tokens": 12}, {"num_predict": 12},
                 id="max_completion_tokens-wins"),
    pytest.param({"temperature": 0}, {"temperature": 0}, id="temperature-zero-kept"),
    pytest.param({"top_p": 0.5}, {"top_p": 0.5}, id="top_p"),
    pytest.param({"seed": 42}, {"seed": 42}, id="seed"),
    pytest.param({"stop": "END"}, {"stop": ["END"]}, id="stop-string-becomes-list"),
    pytest.param({"stop": ["a", "b"]}, {"stop": ["a", "b"]}, id="stop-list"),
    pytest.param({"frequency_penalty": 0.5, "presence_penalty": -1},
                 {"frequency_penalty": 0.5, "presence_penalty": -1}, id="penalties"),
    pytest.param({"temperature": None, "top_p": None}, None, id="nulls-left-out"),
    pytest.param({"options": {"num_ctx": 8192, "temperature": 0.1}, "temperature": 0.7},
                 {"num_ctx": 8192, "temperature": 0.7}, id="options-extension-openai-field-wins"),
    pytest.param({"top_k": 20, "min_p": 0.05}, {"top_k": 20, "min_p": 0.05}, id="llama-cpp-extras"),
])
def test_chat_options(fields: dict[str, Any], options: dict[str, Any] | None) -> None:
    assert chat_to_native(chat(**fields)).body.get("options") == options


@pytest.mark.parametrize("fields,expected", [
    pytest.param({"response_format": {"type": "json_object"}}, {"format": "json"}, id="json_object"),
    pytest.param({"response_format": {"type": "json_schema",
                                       "json_schema": {"name": "x", "schema": {"type": "object"}}}},
                 {"format": {"type": "object"}}, id="json_schema"),
    pytest.param({"response_format": {"type": "text"}}, {}, id="text-means-no-format"),
    pytest.param({"reasoning_effort": "none"}, {"think": False}, id="effort-none"),
    pytest.param({"reasoning_effort": "minimal"}, {"think": "low"}, id="effort-minimal"),
    pytest.param({"reasoning_effort": "high"}, {"think": "high"}, id="effort-high"),
    pytest.param({"reasoning_effort": "xhigh"}, {"think": "max"}, id="effort-xhigh"),
    pytest.param({"reasoning": {"effort": "medium"}}, {"think": "medium"}, id="reasoning-object"),
    pytest.param({"think": True}, {"think": True}, id="native-think-extension"),
    pytest.param({"logprobs": True, "top_logprobs": 3}, {"logprobs": True, "top_logprobs": 3},
                 id="logprobs"),
    pytest.param({"keep_alive": "10m"}, {"keep_alive": "10m"}, id="keep_alive-extension"),
])
def test_chat_top_level_fields(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    body = chat_to_native(chat(**fields)).body
    extra = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
    assert extra == expected


TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
OTHER = {"type": "function", "function": {"name": "other"}}


@pytest.mark.parametrize("choice,expected", [
    pytest.param(None, [TOOL, OTHER], id="absent"),
    pytest.param("auto", [TOOL, OTHER], id="auto"),
    pytest.param("required", [TOOL, OTHER], id="required"),
    pytest.param("none", None, id="none-drops-tools"),
    pytest.param({"type": "function", "function": {"name": "other"}}, [OTHER], id="named-only"),
])
def test_tool_choice(choice: Any, expected: list[dict[str, Any]] | None) -> None:
    fields: dict[str, Any] = {"tools": [TOOL, OTHER]}
    if choice is not None:
        fields["tool_choice"] = choice
    assert chat_to_native(chat(**fields)).body.get("tools") == expected


def test_stream_with_usage() -> None:
    request = chat_to_native(chat(stream=True, stream_options={"include_usage": True}))
    assert request.body["stream"] is True
    assert request.translation.stream and request.translation.include_usage


def test_include_usage_ignored_without_stream() -> None:
    assert not chat_to_native(chat(stream_options={"include_usage": True})).translation.include_usage


def _message(message: dict[str, Any], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return chat_to_native(chat(messages=[*(history or []), message])).body["messages"][-1]


@pytest.mark.parametrize("message,expected", [
    pytest.param({"role": "developer", "content": "be brief"}, {"role": "system", "content": "be brief"},
                 id="developer-is-system"),
    pytest.param({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                 {"role": "user", "content": "a\nb"}, id="text-parts-joined"),
    pytest.param({"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": "data:;base64,QUJD"}]},
        {"role": "user", "content": "what is this?", "images": ["iVBORw0KGgo=", "QUJD"]},
        id="data-uri-images"),
    pytest.param({"role": "assistant", "content": None, "reasoning": "hmm",
                  "tool_calls": [{"id": "call_1", "type": "function",
                                  "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
                 {"role": "assistant", "content": "", "thinking": "hmm",
                  "tool_calls": [{"id": "call_1", "function": {"index": 0, "name": "get_weather",
                                                                "arguments": {"city": "Oslo"}}}]},
                 id="assistant-tool-call-arguments-parsed"),
    pytest.param({"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "now", "arguments": ""}}]},
        {"role": "assistant", "content": "",
         "tool_calls": [{"id": "c", "function": {"index": 0, "name": "now", "arguments": {}}}]},
        id="empty-arguments-are-empty-object"),
    pytest.param({"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "4C"},
                 {"role": "tool", "content": "4C", "tool_call_id": "call_1", "tool_name": "get_weather"},
                 id="tool-name-given"),
])
def test_message_mapping(message: dict[str, Any], expected: dict[str, Any]) -> None:
    assert _message(message) == expected


def test_tool_result_name_looked_up_from_earlier_call() -> None:
    history = [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}]
    result = _message({"role": "tool", "tool_call_id": "call_9", "content": "rain"}, history)
    assert result["tool_name"] == "get_weather"


@pytest.mark.parametrize("fields,param", [
    pytest.param({"messages": []}, "messages", id="messages-empty"),
    pytest.param({"messages": None}, "messages", id="messages-missing"),
    pytest.param({"model": ""}, "model", id="model-empty"),
    pytest.param({"model": None}, "model", id="model-missing"),
    pytest.param({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", id="bad-role"),
    # Found by the fuzz test: a list is unhashable and crashed the lookup (500) instead of a 400.
    pytest.param({"messages": [{"role": [], "content": "x"}]}, "messages[0].role", id="role-not-a-string"),
    pytest.param({"messages": [{"role": "user"}]}, "messages[0].content", id="user-without-content"),
    pytest.param({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]},
        "messages[0].content[0]", id="http-image-url"),
    pytest.param({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
                 "messages[0].content[0]", id="unsupported-part"),
    pytest.param({"messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "[1, 2]"}}]}]},
        "messages[0].tool_calls[0].function.arguments", id="arguments-not-object"),
    pytest.param({"temperature": "hot"}, "temperature", id="temperature-type"),
    pytest.param({"temperature": 3}, "temperature", id="temperature-range"),
    pytest.param({"top_p": True}, "top_p", id="bool-is-not-a-number"),
    pytest.param({"max_tokens": 0}, "max_tokens", id="max_tokens-zero"),
    pytest.param({"max_tokens": 1.5}, "max_tokens", id="max_tokens-float"),
    pytest.param({"stop": ["a", 1]}, "stop", id="stop-non-string"),
    pytest.param({"n": 2}, "n", id="n-above-one"),
    pytest.param({"stream": "yes"}, "stream", id="stream-type"),
    pytest.param({"response_format": {"type": "xml"}}, "response_format", id="format-type"),
    pytest.param({"response_format": {"type": "json_schema", "json_schema": {}}}, "response_format",
                 id="json_schema-without-schema"),
    pytest.param({"reasoning_effort": "extreme"}, "reasoning_effort", id="effort-unknown"),
    pytest.param({"tools": [{"type": "function"}]}, "tools[0]", id="tool-without-function"),
    pytest.param({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
                 "tool_choice", id="tool_choice-unknown-name"),
])
def test_chat_validation_errors(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(OpenAIRequestError) as caught:
        chat_to_native(chat(**fields))
    error = caught.value
    assert isinstance(error, BadRequest) and isinstance(error, ValueError)
    status, body = error.response()
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == param
    assert body["error"]["message"]


def test_body_must_be_an_object() -> None:
    with pytest.raises(OpenAIRequestError):
        chat_to_native(["not", "an", "object"])


def test_completion_mapping() -> None:
    request = completion_to_native({"model": "m", "prompt": "Once", "suffix": "end", "max_tokens": 5,
                                    "stream": True, "stream_options": {"include_usage": True}})
    assert request.path == "/api/generate"
    assert request.body == {"model": "m", "prompt": "Once", "stream": True, "suffix": "end",
                            "options": {"num_predict": 5}}
    assert request.translation.kind is RequestKind.COMPLETION and request.translation.include_usage


@pytest.mark.parametrize("fields,param", [
    pytest.param({"prompt": ["a", "b"]}, "prompt", id="batch"),
    pytest.param({"prompt": [1, 2, 3]}, "prompt", id="token-array"),
    pytest.param({"echo": True}, "echo", id="echo"),
])
def test_completion_errors(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(OpenAIRequestError) as caught:
        completion_to_native({"model": "m", "prompt": "x", **fields})
    assert caught.value.param == param


def test_completion_single_prompt_list_accepted() -> None:
    assert completion_to_native({"model": "m", "prompt": ["only"]}).body["prompt"] == "only"


@pytest.mark.parametrize("fields,native,encoding", [
    pytest.param({"input": "hello"}, {"input": "hello"}, "float", id="string"),
    pytest.param({"input": ["a", "b"], "dimensions": 8}, {"input": ["a", "b"], "dimensions": 8}, "float",
                 id="list-and-dimensions"),
    pytest.param({"input": "x", "encoding_format": "base64"}, {"input": "x"}, "base64", id="base64"),
])
def test_embeddings_mapping(fields: dict[str, Any], native: dict[str, Any], encoding: str) -> None:
    request = embeddings_to_native({"model": "e", **fields})
    assert request.path == "/api/embed"
    assert request.body == {"model": "e", **native}
    assert request.translation.kind is RequestKind.EMBEDDING
    assert request.translation.encoding_format == encoding


@pytest.mark.parametrize("fields,param", [
    pytest.param({"input": []}, "input", id="empty-list"),
    pytest.param({"input": [[1, 2]]}, "input", id="token-arrays"),
    pytest.param({"input": "x", "encoding_format": "int8"}, "encoding_format", id="encoding"),
    pytest.param({"input": "x", "dimensions": 0}, "dimensions", id="dimensions-zero"),
])
def test_embeddings_errors(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(OpenAIRequestError) as caught:
        embeddings_to_native({"model": "e", **fields})
    assert caught.value.param == param


def test_translators_table_covers_the_three_endpoints() -> None:
    assert TRANSLATORS[Dialect.OPENAI, Operation.CHAT](chat()).path == "/api/chat"
    assert TRANSLATORS[Dialect.OPENAI, Operation.COMPLETION]({"model": "m", "prompt": "p"}).path == "/api/generate"
    assert TRANSLATORS[Dialect.OPENAI, Operation.EMBED]({"model": "m", "input": "p"}).path == "/api/embed"
