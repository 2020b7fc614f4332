"""The built tokenizers against llama.cpp's own token ids, on real vocabularies (skipped without them)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from gguf_vocab import real_tokenizer

from ollama_proxy.core.context import CachedCounter, count_prompt, prompt_parts

# One of each tokenizer family by default; OLLAMA_PROXY_VOCAB_ALL=1 adds the big or similar ones.
_QUICK = ["llama-spm", "phi-3", "gpt-2", "llama-bpe", "qwen2", "deepseek-coder", "falcon", "starcoder"]
_MORE = ["qwen35", "deepseek-llm", "command-r", "gemma-4", "mpt", "refact"]
VOCABS = _QUICK + (_MORE if os.environ.get("OLLAMA_PROXY_VOCAB_ALL") else [])


def _cases(directory: Path, name: str) -> list[tuple[str, list[int]]]:
    base = directory / f"ggml-vocab-{name}.gguf"
    texts = base.with_name(base.name + ".inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    ids = base.with_name(base.name + ".out").read_text(encoding="utf-8").split("\n")
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, ids, strict=False)]


@pytest.mark.parametrize("name", VOCABS)
def test_ids_match_llama_cpp(real_vocab_dir: Path, name: str) -> None:
    tokenizer = real_tokenizer(name)
    cases = _cases(real_vocab_dir, name)
    assert len(cases) > 40
    wrong = [(text, want, tokenizer.encode(text, add_special=False)) for text, want in cases
             if tokenizer.encode(text, add_special=False) != want]
    assert wrong == []


@pytest.mark.parametrize(("name", "bos"), [
    pytest.param("llama-spm", [1], id="spm-adds-bos"),
    pytest.param("llama-bpe", [128000], id="llama3-adds-bos"),
    pytest.param("qwen2", [], id="qwen2-no-bos"),
])
def test_bos_follows_llama_cpp_defaults(real_vocab_dir: Path, name: str, bos: list[int]) -> None:
    tokenizer = real_tokenizer(name)
    ids = tokenizer.encode("Hello world")
    assert ids[:len(bos)] == bos
    assert len(ids) == tokenizer.count("Hello world") + len(bos)


def test_chat_counted_in_pieces_equals_rendered_prompt(real_vocab_dir: Path) -> None:
    """Special tokens split first, so pieces plus template tokens add up to the whole rendered prompt."""
    tokenizer = real_tokenizer("llama-bpe")
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Summarise: the cat sat on the mat.\n\nThanks!"},
                {"role": "assistant", "content": "  A cat sat. "},
                {"role": "user", "content": "Now in French, with émojis 🐈?"}]
    rendered = "<|begin_of_text|>" + "".join(
        f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>" for m in messages
    ) + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    whole = len(tokenizer.encode(rendered, add_special=False))
    # Role name and "\n\n" sit between special tokens; they belong to the template overhead.
    overhead = sum(3 + tokenizer.count(f"{m['role']}") + tokenizer.count("\n\n") for m in messages)
    overhead += 1 + 2 + tokenizer.count("assistant") + tokenizer.count("\n\n")
    pieces = count_prompt(prompt_parts({"messages": messages}), exact=CachedCounter(tokenizer.count_many))
    assert pieces.text_tokens + overhead == whole


_CHAT_TEXTS = [
    "<s>hello</s>", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<|im_start|>user\nhi<|im_end|>\n", "<|endoftext|>x", "<start_of_turn>user\nhey<end_of_turn>\n",
    "def f(x):\n    return x**2  # ok", '{"a": [1, 2.5, null]}', "  multiple   spaces  ", "",
]


@pytest.mark.parametrize("name", VOCABS)
def test_special_tokens_and_bos_match_llama_cpp(real_vocab_dir: Path, name: str) -> None:
    """With chat markers in the text and BOS added, as the runner tokenizes a rendered prompt."""
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(str(real_vocab_dir / f"ggml-vocab-{name}.gguf"), vocab_only=True, verbose=False)
    tokenizer = real_tokenizer(name)
    rng = random.Random(3)
    fuzz = ["".join(rng.choice("ab AB\n\t 1.,!?'-éü日本🦙<>|_{}") for _ in range(rng.randint(1, 40)))
            for _ in range(100)]
    wrong = [text for text in _CHAT_TEXTS + fuzz
             if tokenizer.encode(text) != llm.tokenize(text.encode(), add_bos=True, special=True)]
    assert wrong == []


@pytest.mark.parametrize("name", VOCABS)
def test_counts_in_chunks_equal_whole_counts(real_vocab_dir: Path, name: str) -> None:
    """Chunked, remembered counting (where the pre-tokenizer always cuts before a space) is exact:
    llama.cpp's test texts, space-heavy fuzz with special tokens, and all of them as one long text."""
    tokenizer = real_tokenizer(name)
    rng = random.Random(11)
    fuzz = ["".join(rng.choice(["a", "Bc", " ", "  ", "\n", "\t", "\u00a0", "\u3000", "1", "23", ".", "'s",
                                "é", "日本", "🦙", "<|endoftext|>", "<|eot_id|>", "<s>"])
                    for _ in range(rng.randint(1, 60))) for _ in range(300)]
    texts = [text for text, _ in _cases(real_vocab_dir, name)] + _CHAT_TEXTS + fuzz
    texts.append(" ".join(texts))
    whole = [len(tokenizer.encode(text, add_special=False)) for text in texts]
    assert tokenizer.count_many(texts) == whole
    assert [tokenizer.count(text) for text in reversed(texts)] == whole[::-1]
