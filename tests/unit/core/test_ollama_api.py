from __future__ import annotations

import pytest

from ollama_proxy.core.ollama_api import SizeMode, canonical_model, is_api_path, normalized_path, split_context_route

SIZES = (2048, 4096, 8192)


@pytest.mark.parametrize(("path", "mode", "upstream", "size"), [
    pytest.param("/api/chat", SizeMode.PASSTHROUGH, "/api/chat", None, id="bare"),
    pytest.param("/proxy-context/auto/api/chat", SizeMode.AUTO, "/api/chat", None, id="auto"),
    pytest.param("/proxy-context/4096/api/generate", SizeMode.FIXED, "/api/generate", 4096, id="fixed"),
    pytest.param("/proxy-context/auto/v1/chat/completions", SizeMode.AUTO, "/v1/chat/completions", None,
                 id="openai"),
])
def test_split_context_route(path: str, mode: SizeMode, upstream: str, size: int | None) -> None:
    route = split_context_route(path, SIZES, SizeMode.PASSTHROUGH)
    assert (route.mode, route.path, route.size) == (mode, upstream, size)


@pytest.mark.parametrize("spec", ["999", "abc", "", "-1", "4096.0", "04096", "4_096", "\uff14\uff10\uff19\uff16"])
def test_bad_size_lists_valid_ones(spec: str) -> None:
    with pytest.raises(ValueError, match="auto, 2048, 4096, 8192"):
        split_context_route(f"/proxy-context/{spec}/api/chat", SIZES, SizeMode.PASSTHROUGH)


def test_default_route_applies_to_bare_paths() -> None:
    assert split_context_route("/api/chat", SIZES, SizeMode.AUTO).mode is SizeMode.AUTO


@pytest.mark.parametrize(("name", "canonical"), [
    ("llama3.2", "llama3.2:latest"), ("Llama3.2:Latest", "llama3.2:latest"), ("qwen3:4b", "qwen3:4b"),
    ("hf.co/org/model", "hf.co/org/model:latest"), ("localhost:5000/m", "localhost:5000/m:latest"),
    ("registry.ollama.ai/library/llama3", "llama3:latest"), ("team/model:q4", "team/model:q4"),
])
def test_canonical_model(name: str, canonical: str) -> None:
    assert canonical_model(name) == canonical


@pytest.mark.parametrize(("path", "expected"), [
    ("/api/chat", "/api/chat"),
    ("/", "/"),
    ("//127.0.0.1:9999/api/tags", "/127.0.0.1:9999/api/tags"),
    ("///evil.example/api/tags", "/evil.example/api/tags"),
    ("//api/tags", "/api/tags"),
    ("/api//tags", "/api/tags"),
    ("/api/./tags", "/api/tags"),
    ("/api/../v1/models", "/v1/models"),
    ("/a/../../../etc/passwd", "/etc/passwd"),
    ("/..", "/"),
    ("/v1/models/", "/v1/models/"),
    ("/@127.0.0.1:9999/api/tags", "/@127.0.0.1:9999/api/tags"),
    ("/proxy-context/auto//127.0.0.1:1/api/generate", "/proxy-context/auto/127.0.0.1:1/api/generate"),
])
def test_normalized_path_is_origin_form(path: str, expected: str) -> None:
    normal = normalized_path(path)
    assert normal == expected
    assert normal.startswith("/") and not normal.startswith("//")


@pytest.mark.parametrize("path", ["/api\\tags", "\\\\host\\api", "/api/tags\x00", "/api/\r\nHost: x"])
def test_normalized_path_refuses_separators_no_ollama_path_has(path: str) -> None:
    with pytest.raises(ValueError, match="invalid request path"):
        normalized_path(path)


@pytest.mark.parametrize(("path", "forwarded"), [
    ("/", True), ("/api/tags", True), ("/api", True), ("/v1/chat/completions", True), ("/v1", True),
    ("/sim/stats", False), ("/apix", False), ("/v10/x", False), ("/127.0.0.1:9999/api/tags", False),
    ("/metrics2", False), ("/.env", False),
])
def test_only_ollamas_path_space_is_forwarded(path: str, forwarded: bool) -> None:
    assert is_api_path(path) is forwarded
