"""The generated model file itself (no server needed)."""

from __future__ import annotations

from pathlib import Path

import gguf

from ollama_proxy.testing.tiny_gguf import N_EMBD, write_tiny_gguf


def _field(reader: gguf.GGUFReader, key: str) -> object:
    return reader.fields[key].contents()


def test_model_is_small_reproducible_and_complete(tmp_path: Path) -> None:
    first = write_tiny_gguf(tmp_path / "a.gguf")
    second = write_tiny_gguf(tmp_path / "b.gguf")
    assert first.read_bytes() == second.read_bytes()
    assert first.stat().st_size < 1_000_000
    assert write_tiny_gguf(tmp_path / "c.gguf", seed=1).read_bytes() != first.read_bytes()

    reader = gguf.GGUFReader(first)
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "llama.block_count") == 2
    assert _field(reader, "llama.embedding_length") == N_EMBD
    assert _field(reader, "llama.attention.head_count") == 4
    assert _field(reader, "llama.feed_forward_length") == 128
    assert _field(reader, "llama.context_length") == 4096
    assert _field(reader, "llama.pooling_type") == 1
    assert "<|im_start|>" in str(_field(reader, "tokenizer.chat_template"))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    assert isinstance(tokens, list)
    assert all(f"<0x{b:02X}>" in tokens for b in range(256))
    assert len(tokens) == len(set(tokens))
    names = {tensor.name for tensor in reader.tensors}
    assert {"token_embd.weight", "output.weight", "blk.1.ffn_down.weight"} <= names
