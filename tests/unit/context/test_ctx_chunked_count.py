"""Counting texts as space chunks (pretokenizers.space_chunks) with a memory per chunk: the cuts, the
assumption they rest on, and that the counts equal counting whole texts (small vocabularies built here;
the real ones are in test_ctx_tokenizer_real.py)."""

from __future__ import annotations

import dataclasses
import random

import pytest
from test_ctx_tokenizer import _bpe_info, _spm_info
from tokenizers import Regex, pre_tokenizers

from ollama_proxy.core.context import build_tokenizer
from ollama_proxy.core.context.pretokenizers import PRE_TOKENIZERS, space_chunks
from ollama_proxy.core.context.tokenizer import _separator


@pytest.mark.parametrize(("text", "head", "bodies"), [
    pytest.param("", "", [], id="empty"),
    pytest.param("a b", "a", ["b"], id="one-cut"),
    pytest.param(" a", "", ["a"], id="leading-space-is-a-cut"),
    pytest.param("a b ", "a", ["b", ""], id="trailing-space"),
    pytest.param("a   b", "a", ["  b"], id="space-run-glued-after-first"),
    pytest.param("\n a", "\n a", [], id="space-after-newline-glued"),
    pytest.param("a \n b c", "a", ["\n b", "c"], id="glued-then-cut"),
    pytest.param("x\t  y z", "x\t  y", ["z"], id="tab-then-spaces-glued-into-head"),
    pytest.param("a\u00a0 b", "a\u00a0 b", [], id="after-no-break-space-glued"),
    pytest.param("a\x1c b", "a\x1c b", [], id="after-isspace-only-char-glued"),
])
def test_space_chunks(text: str, head: str, bodies: list[str]) -> None:
    assert space_chunks(text) == (head, bodies)


def test_space_chunks_cut_exactly_before_spaces_after_non_whitespace() -> None:
    rng = random.Random(5)
    for _ in range(3000):
        text = "".join(rng.choice("ab  \n\t\u3000.") for _ in range(rng.randint(0, 16)))
        head, bodies = space_chunks(text)
        chunks = [head] + [" " + body for body in bodies]
        assert "".join(chunks) == text
        cuts = {len("".join(chunks[:i])) for i in range(1, len(chunks))}
        want = {i for i, c in enumerate(text) if c == " " and (i == 0 or not text[i - 1].isspace())}
        assert cuts == want, text


def test_regex_whitespace_is_within_str_isspace() -> None:
    """space_chunks decides "non-whitespace" with str.isspace; a cut is only sure if the tokenizer's
    regex engine (onig) counts no other character as \\s."""
    chars = "".join(chr(c) for c in range(1, 0x30000) if not 0xD800 <= c < 0xE000)
    kept = pre_tokenizers.Split(Regex("\\s"), behavior="removed").pre_tokenize_str(chars)
    regex_whitespace = set(chars) - set("".join(piece for piece, _ in kept))
    assert regex_whitespace
    assert all(c.isspace() for c in regex_whitespace)


@pytest.mark.parametrize(("pre", "cuts"), [
    pytest.param("llama-bpe", True, id="llama3"),
    pytest.param("gpt-2", True, id="gpt2"),
    pytest.param("deepseek-coder", False, id="deepseek-gaps"),
])
def test_cuts_follow_the_pre_tokenizer_table(pre: str, cuts: bool) -> None:
    assert PRE_TOKENIZERS[pre].cuts_before_space is cuts
    assert build_tokenizer(_bpe_info(pre)).cuts_at_spaces is cuts


def test_spm_and_special_tokens_with_spaces_are_not_cut() -> None:
    assert not build_tokenizer(_spm_info()).cuts_at_spaces
    info = _bpe_info("gpt-2")
    info["tokenizer.ggml.tokens"] = [*info["tokenizer.ggml.tokens"], "<|a b|>"]
    info["tokenizer.ggml.token_type"] = [*info["tokenizer.ggml.token_type"], 3]
    tokenizer = build_tokenizer(info)
    assert not tokenizer.cuts_at_spaces
    assert tokenizer.count("x<|a b|>y") == len(tokenizer.encode("x<|a b|>y", add_special=False))


@pytest.mark.parametrize(("specials", "separator"), [
    pytest.param(["<s>", "</s>"], "<s>", id="first-that-stands-apart"),
    pytest.param(["<s>", "<s><s>", "</s>"], "</s>", id="not-inside-or-overlapping-another"),
    pytest.param(["ab", "xa"], "xa", id="another-ends-with-its-start"),
    pytest.param(["ab", "ba"], None, id="none"),
])
def test_separator(specials: list[str], separator: str | None) -> None:
    assert _separator(specials) == separator


def _texts(rng: random.Random, n: int) -> list[str]:
    alphabet = ["hello", "world", "xyz", " ", " ", "  ", "\n", "\t", "!", "é", "<|eot|>", "lo", "1"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(n)]


@pytest.mark.parametrize("pre", ["gpt-2", "llama-bpe", "qwen2"])
def test_chunked_counts_equal_whole_counts(pre: str) -> None:
    tokenizer = build_tokenizer(_bpe_info(pre))
    assert tokenizer.cuts_at_spaces
    assert tokenizer.separator is not None
    texts = _texts(random.Random(7), 300)  # enough unseen chunks to be counted joined
    whole = [len(tokenizer.encode(t, add_special=False)) for t in texts]
    assert tokenizer.count_many(texts) == whole
    assert tokenizer.count_many(texts) == whole  # now from the memory
    assert [tokenizer.count(t) for t in texts] == whole


def test_memory_is_bounded_and_counts_stay_exact() -> None:
    tokenizer = dataclasses.replace(build_tokenizer(_bpe_info("gpt-2")), chunk_memo=40)
    texts = _texts(random.Random(8), 200)
    for text in texts:
        assert tokenizer.count(text) == len(tokenizer.encode(text, add_special=False))
        assert len(tokenizer._chunks) <= 40


def test_mostly_new_words_are_counted_whole_and_not_remembered() -> None:
    tokenizer = build_tokenizer(_bpe_info("gpt-2"))
    rng = random.Random(9)
    text = " ".join("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=6)) for _ in range(3000))
    assert tokenizer.count(text) == len(tokenizer.encode(text, add_special=False))
    assert tokenizer._chunks == {}
    assert tokenizer.count(text[:200]) == len(tokenizer.encode(text[:200], add_special=False))
    assert tokenizer._chunks  # a short text's new words are remembered
