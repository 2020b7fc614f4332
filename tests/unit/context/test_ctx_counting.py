"""prompt_parts, count_prompt and CachedCounter: what is counted, and that caching never changes a count."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from ollama_proxy.core.context import (
    IMAGE_TOKENS,
    CachedCounter,
    CharEstimate,
    CountMethod,
    TemplateOverhead,
    count_prompt,
    prompt_parts,
)


class WordCounter:
    """Counts words and records which texts it was asked to tokenize."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, texts: Sequence[str]) -> list[int]:
        self.seen.extend(texts)
        return [len(t.split()) for t in texts]


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(("body", "texts", "images", "messages"), [
    pytest.param({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
                 ("be brief", "hi"), 0, 2, id="chat"),
    pytest.param({"messages": [{"role": "user", "content": "look", "images": ["aGk=", "aGk="]}]},
                 ("look",), 2, 1, id="chat-images"),
    pytest.param({"messages": [{"role": "assistant", "content": "", "thinking": "hmm",
                                "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]}]},
                 ("hmm", '[{"function":{"name":"f","arguments":{"x":1}}}]'), 0, 1, id="thinking-and-calls"),
    pytest.param({"messages": [{"role": "user", "content": "q"}], "tools": TOOLS},
                 ("q", json.dumps(TOOLS, separators=(",", ":"))), 0, 1, id="tools"),
    pytest.param({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is"}, {"type": "image_url", "image_url": {"url": "data:"}}]}]},
                 ("what is",), 1, 1, id="openai-content-parts"),
    pytest.param({"system": "sys", "prompt": "go", "images": ["x"]}, ("sys", "go"), 1, 1, id="generate"),
    pytest.param({"prompt": "def f(", "suffix": "return x"}, ("def f(", "return x"), 0, 1,
                 id="fill-in-middle"),
    pytest.param({"input": ["a b", "c"]}, ("a b", "c"), 0, 1, id="embed-list"),
    pytest.param({"input": "a b"}, ("a b",), 0, 1, id="embed-string"),
    pytest.param({"messages": []}, (), 0, 0, id="load-only-chat"),
    pytest.param({"prompt": ""}, (), 0, 0, id="load-only-generate"),
])
def test_prompt_parts(body: dict[str, Any], texts: tuple[str, ...], images: int, messages: int) -> None:
    parts = prompt_parts(body)
    assert (parts.texts, parts.images, parts.messages) == (texts, images, messages)


def test_estimate_counts_characters_overhead_and_images() -> None:
    parts = prompt_parts({"messages": [{"role": "user", "content": "x" * 401, "images": ["i"]}]})
    count = count_prompt(parts, estimate=CharEstimate(4.0), overhead=TemplateOverhead(per_message=5, fixed=6))
    assert count.text_tokens == 101  # rounded up: an estimate should not undercount
    assert count.overhead_tokens == 11
    assert count.image_tokens == IMAGE_TOKENS
    assert count.tokens == 101 + 11 + IMAGE_TOKENS
    assert count.method is CountMethod.HEURISTIC
    assert count.chars == 401


def test_empty_request_costs_nothing() -> None:
    assert count_prompt(prompt_parts({"messages": []})).tokens == 0


def test_exact_count_uses_counter() -> None:
    parts = prompt_parts({"messages": [{"role": "user", "content": "one two three"}]})
    count = count_prompt(parts, exact=CachedCounter(WordCounter()), overhead=TemplateOverhead(2.5, 1))
    assert (count.method, count.text_tokens, count.overhead_tokens, count.tokens) == (
        CountMethod.EXACT, 3, 4, 7)


def test_growing_chat_tokenizes_only_new_messages() -> None:
    words = WordCounter()
    counter = CachedCounter(words)
    chat = [{"role": "user", "content": "alpha beta"}, {"role": "assistant", "content": "gamma"}]
    first = count_prompt(prompt_parts({"messages": chat}), exact=counter)
    # The next turn arrives as freshly parsed JSON: equal strings, new objects.
    longer = json.loads(json.dumps([*chat, {"role": "user", "content": "delta epsilon zeta"}]))
    second = count_prompt(prompt_parts({"messages": longer}), exact=counter)
    assert words.seen == ["alpha beta", "gamma", "delta epsilon zeta"]
    assert (first.text_tokens, second.text_tokens) == (3, 6)
    assert counter.uncached_chars(["gamma", "new text"]) == len("new text")
    fresh = count_prompt(prompt_parts({"messages": longer}), exact=CachedCounter(WordCounter()))
    assert fresh == second


def test_repeated_text_in_one_request_counts_twice() -> None:
    counter = CachedCounter(WordCounter())
    parts = prompt_parts({"messages": [{"role": "user", "content": "same words"}] * 3})
    assert count_prompt(parts, exact=counter).text_tokens == 6


def test_cache_is_bounded() -> None:
    words = WordCounter()
    counter = CachedCounter(words, max_entries=2)
    for text in ["a", "b", "a", "c"]:  # "a" is touched again, so "b" is the oldest when "c" arrives
        counter.count([text])
    assert len(counter) == 2
    counter.count(["a"])
    counter.count(["b"])
    assert words.seen == ["a", "b", "c", "b"]
