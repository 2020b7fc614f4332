"""Pure parts of the simulator: token counts, model specs, replies, tool calls, embeddings, fault specs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from ollama_proxy.sim import Fault, ModelSpec, SimConfig, approx_token_count, model_info_from_gguf
from ollama_proxy.sim.faults import FaultBox
from ollama_proxy.sim.rules import SimError
from ollama_proxy.sim.textgen import embed_vector, plan_reply, plan_tool_calls


@pytest.mark.parametrize(("text", "tokens"), [
    pytest.param("", 0, id="empty"),
    pytest.param("The quick brown fox jumps over the lazy dog.", 10, id="english-sentence"),
    pytest.param("internationalization", 5, id="long-word-every-4"),
    pytest.param("1234567", 3, id="digits-by-three"),
    pytest.param("a\n\nb", 3, id="newline-run"),
    pytest.param("<|im_start|>user\nhi<|im_end|>", 5, id="special-tokens-whole"),
])
def test_approx_token_count(text: str, tokens: int) -> None:
    assert approx_token_count(text) == tokens


def test_approx_count_is_about_four_chars_per_token() -> None:
    text = "Local models answer questions about the weather, code and history quite well. " * 50
    assert 3.5 < len(text) / approx_token_count(text) < 6


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("llama3.2", ("llama3.2:latest", "llama", False, 131072, "3.2B"), id="bare"),
    pytest.param("qwen3:4b=40960", ("qwen3:4b", "qwen3", False, 40960, "4.0B"), id="tag-and-context"),
    pytest.param("nomic-embed-text", ("nomic-embed-text:latest", "nomic-bert", True, 2048, "137M"),
                 id="embedding"),
])
def test_model_spec_parse(text: str, expected: tuple[Any, ...]) -> None:
    spec = ModelSpec.parse(text)
    assert (spec.name, spec.arch, spec.embedding, spec.context_length, spec.parameter_size) == expected
    assert spec.capabilities == (["embedding"] if spec.embedding else ["completion", "tools"])


@pytest.mark.parametrize("kwargs", [
    pytest.param({"profile": "tpu"}, id="profile"), pytest.param({"time_scale": -1}, id="scale"),
    pytest.param({"num_parallel": 0}, id="parallel")])
def test_sim_config_rejects(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SimConfig(**kwargs)


def test_reply_is_deterministic_and_respects_budget() -> None:
    reply = plan_reply(1, "m", "prompt", budget=1000)
    assert reply == plan_reply(1, "m", "prompt", budget=1000)
    assert reply.done_reason == "stop" and 5 <= len(reply.pieces) <= 41
    assert plan_reply(2, "m", "prompt", 1000).text != reply.text
    cut = plan_reply(1, "m", "prompt", budget=3)
    assert (cut.pieces, cut.done_reason) == (reply.pieces[:3], "length")


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                     "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city", "days", "unit"]}}}


def test_tool_call_fills_required_arguments() -> None:
    calls = plan_tool_calls(0, [WEATHER], [{"role": "user", "content": "Weather in Oslo?"}])
    assert len(calls) == 1
    assert calls[0]["function"] == {"index": 0, "name": "get_weather",
                                    "arguments": {"city": "Oslo", "days": 1, "unit": "c"}}
    assert calls[0]["id"].startswith("call_") and len(calls[0]["id"]) == 13


@pytest.mark.parametrize("messages", [
    pytest.param([{"role": "user", "content": "Tell me a joke"}], id="not-asked"),
    pytest.param([{"role": "user", "content": "weather?"}, {"role": "tool", "content": "4C"}],
                 id="after-result"),
])
def test_no_tool_call(messages: list[dict[str, Any]]) -> None:
    assert plan_tool_calls(0, [WEATHER], messages) == []


def test_embeddings_are_unit_and_deterministic() -> None:
    vector = embed_vector("m", "hello", 768)
    assert math.isclose(sum(v * v for v in vector), 1.0)
    assert vector == embed_vector("m", "hello", 768) != embed_vector("m", "hello!", 768)


@pytest.mark.parametrize(("body", "fragment"), [
    pytest.param({"mode": "explode"}, "unknown fault mode", id="mode"),
    pytest.param({"mode": "error", "count": -1}, "count", id="count"),
    pytest.param({"mode": "error", "status": 200}, "status", id="status"),
    pytest.param({"mode": "error", "colour": 1}, "unknown fault fields", id="field"),
])
def test_fault_from_json_rejects(body: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SimError, match=fragment):
        Fault.from_json(body)


def test_fault_box_counts_and_paths() -> None:
    box = FaultBox()
    box.set(Fault.from_json({"mode": "busy", "count": 2, "paths": ["/api/chat"]}))
    assert box.take("/api/tags") is None
    assert box.take("/sim/stats") is None
    assert [box.take("/api/chat") is not None for _ in range(3)] == [True, True, False]
    assert box.triggered == 2


def test_model_info_from_gguf_reads_tokenizer_arrays(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(8192)
    writer.add_name("dropped")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "<s>", "</s>", "a", "b", "ab"])
    writer.add_bos_token_id(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    info = model_info_from_gguf(path)
    assert info["general.architecture"] == "llama"
    assert info["llama.context_length"] == 8192
    assert info["tokenizer.ggml.tokens"] == ["<unk>", "<s>", "</s>", "a", "b", "ab"]
    assert info["tokenizer.ggml.bos_token_id"] == 1
    assert "general.name" not in info


@pytest.mark.parametrize("length", [1, 2, 7])
def test_reply_has_exactly_the_configured_length(length: int) -> None:
    reply = plan_reply(3, "m", "prompt", budget=1000, lengths=(length, length))
    assert len(reply.pieces) == length and reply.done_reason == "stop"
