"""Where the real llama.cpp test vocabularies are, if anywhere.

They ship in the llama-cpp-python 0.3.36 source distribution (vendor/llama.cpp/models/ggml-vocab-*.gguf,
with `.inp`/`.out` files of texts and llama.cpp's token ids for them). Nothing downloads them here: point
OLLAMA_PROXY_VOCAB_DIR at that models directory (CI fetches the sdist) and the real-vocabulary tests run;
without it they skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf_vocab import VOCAB_DIR_ENV, vocab_dir


@pytest.fixture
def real_vocab_dir() -> Path:
    directory = vocab_dir()
    if directory is None:
        pytest.skip(f"set {VOCAB_DIR_ENV} to llama.cpp's models/ directory to test real vocabularies")
    return directory
