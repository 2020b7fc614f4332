"""Reading trained and loaded contexts and digests out of /api/show, /api/ps and /api/tags JSON."""

from __future__ import annotations

from typing import Any

import pytest

from ollama_proxy.core.context import (
    loaded_contexts,
    model_digests,
    trained_context_length,
)


@pytest.mark.parametrize(("model_info", "expected"), [
    pytest.param({"general.architecture": "llama", "llama.context_length": 131072}, 131072, id="llama"),
    pytest.param({"general.architecture": "qwen3", "qwen3.context_length": 40960,
                  "qwen3vl.context_length": 8}, 40960, id="arch-key-wins"),
    pytest.param({"general.architecture": "gemma3"}, None, id="missing"),
    pytest.param({}, None, id="empty-cloud-or-unknown"),
    pytest.param({"bert.context_length": 512}, 512, id="no-arch-one-candidate"),
    pytest.param({"a.context_length": 512, "b.context_length": 1024}, None, id="no-arch-ambiguous"),
    pytest.param({"general.architecture": "llama", "llama.context_length": True}, None, id="not-a-number"),
])
def test_trained_context_length(model_info: dict[str, Any], expected: int | None) -> None:
    assert trained_context_length(model_info) == expected


def test_loaded_contexts() -> None:
    ps = {"models": [
        {"name": "llama3.2:latest", "model": "llama3.2:latest", "context_length": 8192, "digest": "sha256:a"},
        {"name": "old", "model": "old"},  # Ollama before v0.9.7: no context_length
        {"name": "qwen3:4b", "model": "qwen3:4b", "context_length": 32768},
        "garbage",
    ]}
    assert loaded_contexts(ps) == {"llama3.2:latest": 8192, "qwen3:4b": 32768}
    assert loaded_contexts({}) == {}


def test_model_digests() -> None:
    tags = {"models": [{"name": "llama3.2", "model": "llama3.2", "digest": "sha256:a"},
                       {"name": "broken"}]}
    assert model_digests(tags) == {"llama3.2:latest": "sha256:a"}
    assert model_digests({"models": None}) == {}
