"""A tiny GGUF model that llama.cpp really loads, made from a fixed seed (no download).

Tests use it to run `llama_cpp.server` as a real OpenAI-type backend. The recipe follows
/work/shared/reference/real-backend.md: llama architecture, 2 layers, embedding 64, 4 heads,
feed-forward 128, context 4096; a SentencePiece-style vocabulary with all 256 byte tokens
(llama.cpp needs them, e.g. `<0x0A>` for a newline); a ChatML chat template so the server
applies the model's own template; mean pooling so the same model serves embeddings. Random
weights speak word salad: assert on shapes, counts and finish reasons, never on meaning.

Run `python -m ollama_proxy.testing.tiny_gguf OUT.gguf` to write one by hand.
"""

from __future__ import annotations

import string
import sys
from pathlib import Path

import gguf
import numpy as np

ARCH = "llama"
N_LAYERS = 2
N_EMBD = 64
N_HEAD = 4
N_FF = 128
N_CTX_TRAIN = 4096
SEED = 20261122

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Whole words, each with every prefix, so SentencePiece merges can build them from characters.
_WORDS = ("hello", "world", "the", "proxy", "model", "token", "llama", "ollama", "context", "stream",
          "answer", "prime", "seven", "weather", "city", "test", "tiny", "name", "one", "and")

SPACE = "▁"  # SentencePiece's word-boundary mark


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types in id order: specials, bytes, controls, characters, words."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    tokens += ["<|im_start|>", "<|im_end|>"]
    types += [gguf.TokenType.CONTROL] * 2
    pieces: list[str] = [SPACE]
    pieces += [c for c in string.printable if c.isprintable() and c != " "]
    for word in _WORDS:
        for end in range(1, len(word) + 1):
            pieces += [SPACE + word[:end], word[:end]]
    seen = set(tokens)
    unique = [p for p in dict.fromkeys(pieces) if p not in seen]
    tokens += unique
    types += [gguf.TokenType.NORMAL] * len(unique)
    # Longer pieces score higher, so merging prefers whole words over characters.
    scores = [0.0] * (len(tokens) - len(unique)) + [float(len(p)) - 100.0 for p in unique]
    return tokens, scores, [int(t) for t in types]


def write_tiny_gguf(path: Path | str, *, seed: int = SEED) -> Path:
    """Write the model to `path` (about 0.6 MB) and return the path; same seed, same bytes."""
    path = Path(path)
    tokens, scores, types = vocabulary()
    writer = gguf.GGUFWriter(str(path), ARCH)
    writer.add_name("ollama-proxy tiny test model")
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYERS)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)
    for name, array in _tensors(len(tokens), seed):
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _tensors(n_vocab: int, seed: int) -> list[tuple[str, np.ndarray]]:
    # numpy shapes are ggml's dimensions reversed: a (rows, cols) array is ggml ne = [cols, rows].
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    def norm() -> np.ndarray:
        return np.ones(N_EMBD, dtype=np.float32)

    tensors = [("token_embd.weight", weight(n_vocab, N_EMBD)), ("output_norm.weight", norm()),
               ("output.weight", weight(n_vocab, N_EMBD))]
    for i in range(N_LAYERS):
        tensors += [(f"blk.{i}.attn_norm.weight", norm()),
                    (f"blk.{i}.attn_q.weight", weight(N_EMBD, N_EMBD)),
                    (f"blk.{i}.attn_k.weight", weight(N_EMBD, N_EMBD)),
                    (f"blk.{i}.attn_v.weight", weight(N_EMBD, N_EMBD)),
                    (f"blk.{i}.attn_output.weight", weight(N_EMBD, N_EMBD)),
                    (f"blk.{i}.ffn_norm.weight", norm()),
                    (f"blk.{i}.ffn_gate.weight", weight(N_FF, N_EMBD)),
                    (f"blk.{i}.ffn_up.weight", weight(N_FF, N_EMBD)),
                    (f"blk.{i}.ffn_down.weight", weight(N_EMBD, N_FF))]
    return tensors


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m ollama_proxy.testing.tiny_gguf OUT.gguf")
    written = write_tiny_gguf(sys.argv[1])
    print(f"{written}: {written.stat().st_size} bytes")
