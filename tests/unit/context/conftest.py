"""Where the real llama.cpp test vocabularies are, if anywhere.

They ship in the llama-cpp-python 0.3.36 source distribution (vendor/llama.cpp/models/ggml-vocab-*.gguf,
with `.inp`/`.out` files of texts and llama.cpp's token ids for them). Nothing downloads them here: point
OLLAMA_PROXY_VOCAB_DIR at that models directory (CI fetches the sdist) and the real-vocabulary tests run;
without it they skip.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
from gguf_vocab import read_model_info

from ollama_proxy.core.context import GgufTokenizer, build_tokenizer

VOCAB_DIR_ENV = "OLLAMA_PROXY_VOCAB_DIR"


def vocab_dir() -> Path | None:
    """The directory named by OLLAMA_PROXY_VOCAB_DIR if it holds ggml-vocab files, else None."""
    value = os.environ.get(VOCAB_DIR_ENV)
    if not value:
        return None
    path = Path(value)
    return path if any(path.glob("ggml-vocab-*.gguf")) else None


@functools.cache
def real_tokenizer(name: str) -> GgufTokenizer:
    """The tokenizer built from `ggml-vocab-{name}.gguf`, built once per test session."""
    directory = vocab_dir()
    assert directory is not None
    return build_tokenizer(read_model_info(directory / f"ggml-vocab-{name}.gguf"))


@pytest.fixture
def real_vocab_dir() -> Path:
    directory = vocab_dir()
    if directory is None:
        pytest.skip(f"set {VOCAB_DIR_ENV} to llama.cpp's models/ directory to test real vocabularies")
    return directory
