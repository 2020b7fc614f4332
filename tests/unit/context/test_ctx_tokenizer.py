"""The GGUF tokenizer builder on small vocabularies made here, so it is tested without any download."""

from __future__ import annotations

from typing import Any

import pytest

from ollama_proxy.core.context import TokenizerUnavailable, build_tokenizer

NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6


def _byte_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    extra = 0
    chars = []
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _bpe_info(pre: str, **extra: Any) -> dict[str, Any]:
    words = ["he", "ll", "llo", "hello", "Ġw", "or", "Ġwor", "ld", "Ġworld", "Ġxyz", "<|eot|>"]
    tokens = _byte_alphabet() + words
    merges = ["h e", "l l", "ll o", "he llo", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"]
    info = {
        "general.architecture": "llama",
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [NORMAL] * (len(tokens) - 1) + [CONTROL],
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": len(tokens) - 1,
        "tokenizer.ggml.eos_token_id": len(tokens) - 1,
    }
    info.update(extra)
    return info


def _id(tokenizer_info: dict[str, Any], token: str) -> int:
    return int(tokenizer_info["tokenizer.ggml.tokens"].index(token))


def _spm_info(**extra: Any) -> dict[str, Any]:
    pieces: list[tuple[str, float, int]] = [
        ("<unk>", 0.0, UNKNOWN), ("<s>", 0.0, CONTROL), ("</s>", 0.0, CONTROL)]
    pieces += [(f"<0x{b:02X}>", 0.0, BYTE) for b in range(256)]
    pieces += [(p, -float(i), NORMAL) for i, p in enumerate(
        ["▁", "a", "b", "c", "h", "i", "▁h", "▁hi", "ab", "bc"])]
    info = {
        "general.architecture": "llama",
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [p for p, _, _ in pieces],
        "tokenizer.ggml.scores": [s for _, s, _ in pieces],
        "tokenizer.ggml.token_type": [t for _, _, t in pieces],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }
    # "bc" scores above "ab" although it comes later: llama.cpp merges the best score first.
    info["tokenizer.ggml.scores"][info["tokenizer.ggml.tokens"].index("bc")] = -0.5
    info.update(extra)
    return info


@pytest.mark.parametrize(("text", "pieces"), [
    pytest.param("hello world", ["hello", "Ġworld"], id="merges"),
    pytest.param("hello<|eot|> world", ["hello", "<|eot|>", "Ġworld"], id="special-token-whole"),
    pytest.param("hello!", ["hello", "!"], id="regex-split-punctuation"),
    pytest.param(" xyz", ["Ġ", "x", "y", "z"], id="no-ignore-merges-for-gpt2"),
    pytest.param("é", ["Ã", "©"], id="bytes-mapped"),
])
def test_byte_level_bpe(text: str, pieces: list[str]) -> None:
    info = _bpe_info("gpt-2")
    tokenizer = build_tokenizer(info)
    assert tokenizer.encode(text, add_special=False) == [_id(info, p) for p in pieces]
    assert tokenizer.count(text) == len(pieces)


def test_llama3_pre_looks_whole_pieces_up_and_adds_bos() -> None:
    info = _bpe_info("llama-bpe")
    tokenizer = build_tokenizer(info)
    # "Ġxyz" has no merges leading to it; llama.cpp's ignore_merges still finds it whole.
    assert tokenizer.encode(" xyz") == [_id(info, "<|eot|>"), _id(info, "Ġxyz")]
    assert tokenizer.special_count == 1


def test_metadata_overrides_bos_default() -> None:
    tokenizer = build_tokenizer(_bpe_info("llama-bpe", **{"tokenizer.ggml.add_bos_token": False}))
    assert tokenizer.encode("hello") == tokenizer.encode("hello", add_special=False)


def test_duplicated_token_keeps_first_id() -> None:
    info = _bpe_info("gpt-2")
    info["tokenizer.ggml.tokens"] = [*info["tokenizer.ggml.tokens"], "hello"]
    info["tokenizer.ggml.token_type"] = [*info["tokenizer.ggml.token_type"], NORMAL]
    assert build_tokenizer(info).encode("hello", add_special=False) == [_id(info, "hello")]


@pytest.mark.parametrize(("text", "pieces"), [
    pytest.param("hi", ["▁hi"], id="space-prefix"),
    pytest.param("abc", ["▁", "a", "bc"], id="best-score-first"),
    pytest.param("a<s>hi", ["▁", "a", "<s>", "▁hi"], id="prefix-after-special"),
    pytest.param("h é", ["▁h", "▁", "<0xC3>", "<0xA9>"], id="byte-fallback"),
])
def test_sentencepiece(text: str, pieces: list[str]) -> None:
    info = _spm_info()
    tokenizer = build_tokenizer(info)
    assert tokenizer.encode(text) == [1] + [_id(info, p) for p in pieces]


def test_sentencepiece_without_space_prefix() -> None:
    info = _spm_info(**{"tokenizer.ggml.add_space_prefix": False})
    assert build_tokenizer(info).encode("hi", add_special=False) == [_id(info, "h"), _id(info, "i")]


def test_count_many_matches_count() -> None:
    tokenizer = build_tokenizer(_bpe_info("gpt-2"))
    texts = ["hello world", "", "hello<|eot|>"]
    assert tokenizer.count_many(texts) == [tokenizer.count(t) for t in texts] == [2, 0, 2]


@pytest.mark.parametrize("info", [
    pytest.param({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": []}, id="not-verbose"),
    pytest.param(_bpe_info("no-such-pre"), id="unknown-pre"),
    pytest.param({**_bpe_info("gpt-2"), "tokenizer.ggml.model": "bert"}, id="bert"),
    pytest.param({**_spm_info(), "tokenizer.ggml.scores": []}, id="spm-without-scores"),
])
def test_unavailable(info: dict[str, Any]) -> None:
    with pytest.raises(TokenizerUnavailable):
        build_tokenizer(info)
