"""Token counting for the simulator: a deterministic approximation, and GGUF metadata for exact counts.

The approximation stands in for a model's tokenizer wherever no real one is given; it only has to
be stable and roughly right (about one token per four characters of English). A real vocabulary
can be read from a GGUF file with `model_info_from_gguf` and served by verbose /api/show. This
module knows nothing about HTTP or the models' state.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

# Special tokens such as <|im_start|> (one token each, as in real vocabularies), words, up to three
# digits at a time (as Llama 3 and Qwen split numbers), whitespace runs and single punctuation marks.
_PIECES = re.compile(r"<\|\w+\|>|[^\W\d_]+|\d{1,3}|\s+|[^\w\s]|_")
_SHORT_WORD = 6


def _piece_tokens(piece: str) -> int:
    if piece.startswith("<|"):
        return 1
    if piece.isspace():
        # A single space belongs to the next word, as in BPE vocabularies; longer runs and
        # newlines are tokens of their own.
        return 0 if piece == " " else 1
    if piece[0].isalpha() and len(piece) > _SHORT_WORD:
        return -(-len(piece) // 4)
    return 1


def approx_token_count(text: str) -> int:
    """Count tokens the way a typical BPE vocabulary roughly would.

    Special tokens (`<|im_end|>`) and common words are one token, long words one per four
    characters, numbers one per three digits, each punctuation mark one, whitespace runs (other
    than a single space) one.
    """
    return sum(_piece_tokens(p) for p in _PIECES.findall(text))


def pseudo_token_ids(key: str, count: int) -> list[int]:
    """Stable fake token ids for the `context` array of /api/generate."""
    rng = random.Random(key)
    return [rng.randrange(1000, 128000) for _ in range(count)]


def _field_value(field: Any) -> Any:
    value = field.contents()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def model_info_from_gguf(path: str | Path) -> dict[str, Any]:
    """Read a GGUF file's key/value metadata into /api/show's `model_info` shape.

    Ollama drops `general.name` and `tokenizer.chat_template` from `model_info`, so they are
    dropped here too. Needs the `gguf` package (a test dependency), imported only when called.
    """
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    skip = {"general.name", "tokenizer.chat_template"}
    return {name: _field_value(f) for name, f in reader.fields.items()
            if not name.startswith("GGUF.") and name not in skip}
