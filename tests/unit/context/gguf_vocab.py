"""Read a GGUF file's metadata into the shape `/api/show` (verbose) returns as `model_info`.

`gguf.GGUFReader` builds a numpy view per array element and takes 20-50 s on a 128k-token vocabulary,
which is too slow for unit tests; the key/value section is simple enough to read directly (GGUF v2/v3,
little-endian: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).
"""

from __future__ import annotations

import functools
import os
import struct
from pathlib import Path
from typing import Any

from ollama_proxy.core.context import GgufTokenizer, build_tokenizer

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> Any:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        length = self.take("Q")
        raw = self.data[self.pos:self.pos + length]
        self.pos += length
        return raw.decode("utf-8", "replace")

    def value(self, kind: int) -> Any:
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.take("I"), self.take("Q")
            if item_kind == _STRING:
                return [self.string() for _ in range(count)]
            fmt = _SCALARS[item_kind]
            items = struct.unpack_from(f"<{count}{fmt}", self.data, self.pos)
            self.pos += struct.calcsize(f"<{count}{fmt}")
            return list(items)
        return self.take(_SCALARS[kind])


def read_model_info(path: Path) -> dict[str, Any]:
    """All metadata keys of a GGUF file, arrays in full, as `/api/show` with `verbose: true` gives them."""
    cursor = _Cursor(path.read_bytes())
    if cursor.data[:4] != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file")
    cursor.pos = 4
    version = cursor.take("I")
    if version < 2:
        raise ValueError(f"{path}: GGUF version {version} is not supported")
    _tensors, kv_count = cursor.take("QQ")
    info: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cursor.string()
        info[key] = cursor.value(cursor.take("I"))
    # Ollama drops these two from `model_info`.
    info.pop("general.name", None)
    info.pop("tokenizer.chat_template", None)
    return info


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
