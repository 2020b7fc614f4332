"""llama.cpp's pre-tokenizer table: which regexes split the text before BPE, per `tokenizer.ggml.pre`.

The model's runner is llama.cpp, so its table (src/llama-vocab.cpp, `llm_tokenizer_bpe`) is the ground
truth, not the Hugging Face `tokenizer.json` the model was converted from. The regexes are applied in
order, each one splitting every piece the previous ones left ("isolated": matches and the gaps between
them both become pieces). This module holds that table and where it always cuts the text
(`space_chunks`); it must not know how a tokenizer is built.

Non-ASCII characters are written as \\u escapes on purpose: pasted literal characters were silently
Unicode-normalised by editors (U+212A KELVIN SIGN became "K"), which broke the character ranges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CONTRACTIONS = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
_LLAMA3 = (_CONTRACTIONS + "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
           "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
_QWEN2 = (_CONTRACTIONS + "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
          "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
_QWEN35 = (_CONTRACTIONS + "|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}"
           "| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*"
           "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
_GPT4O = ("[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+" + _CONTRACTIONS + "?"
          "|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*" + _CONTRACTIONS + "?"
          "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
_TEKKEN = ("[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+"
           "|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*"
           "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
_CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
_DEEPSEEK_LLM_LETTERS = (
    "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
    "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba"
    "\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45"
    "\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe"
    "\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc"
    "\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    "\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3"
    "\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06"
    "\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3"
    "\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df"
    "\U0001e900-\U0001e943]+"
)
_DEEPSEEK_V3 = ("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
                "|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
                "| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+")


@dataclass(frozen=True, slots=True)
class PreTokenizer:
    """How llama.cpp prepares text for one `pre` family before the BPE merges run."""

    regexes: tuple[str, ...]
    # Llama-3-style vocabularies look a whole piece up before merging it (llama.cpp `ignore_merges`).
    ignore_merges: bool = False
    # llama.cpp's default for adding BOS when the GGUF has no `tokenizer.ggml.add_bos_token`.
    add_bos: bool = False
    # Whether the regexes always cut between a non-whitespace character and a space after it, so
    # that counting the `space_chunks` apart is exact. True where one regex (the last or one that
    # sees every piece) matches a non-space only in runs that never take a space after it, and
    # covers every non-space character; the deepseek and bloom tables leave some characters
    # unmatched, and such a gap can run across a space ("\u2192 \u2192").
    cuts_before_space: bool = True


_DEFAULT = PreTokenizer(("[\\p{P}\\$\\+<=>\\^~\\|]+", _GPT2, "\\p{N}+", "[0-9][0-9][0-9]"))
_LLAMA3_PRE = PreTokenizer((_LLAMA3,), ignore_merges=True, add_bos=True)
_QWEN2_PRE = PreTokenizer((_QWEN2,))
_GPT2_PRE = PreTokenizer((_GPT2,))
_STARCODER_PRE = PreTokenizer(("\\p{N}", _GPT2))

# Names are grouped exactly as llama.cpp's `llama_vocab::impl::load` maps them.
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": _DEFAULT,
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
                     "lfm2", "jina-v5-nano"), _LLAMA3_PRE),
    **dict.fromkeys(("dbrx", "smaug-bpe"), PreTokenizer((_LLAMA3,))),
    "chatglm-bpe": PreTokenizer((_LLAMA3,)),
    **dict.fromkeys(("glm4", "glm5"), PreTokenizer((_LLAMA3,), ignore_merges=True)),
    "deepseek-llm": PreTokenizer(("[\r\n]", _DEEPSEEK_LLM_LETTERS,
                                  "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
                                  "\\s+$", _CJK, "\\p{N}+"), cuts_before_space=False),
    "deepseek-coder": PreTokenizer(("[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", _CJK, "\\p{N}"),
                                   cuts_before_space=False),
    "deepseek-v3": PreTokenizer(("\\p{N}{1,3}", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+", _DEEPSEEK_V3)),
    "falcon": PreTokenizer(("[\\p{P}\\$\\+<=>\\^~\\|`]+", _GPT2, "[0-9][0-9][0-9]")),
    **dict.fromkeys(("starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b",
                     "mellum2"), _STARCODER_PRE),
    **dict.fromkeys(("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de",
                     "a.x-4.0", "mellum", "modern-bert", "mpt", "olmo", "jais", "trillion",
                     "granite-docling", "exaone4", "jina-v1-en", "jina-v2-code", "roberta-bpe"), _GPT2_PRE),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "stablelm2", "hunyuan", "solar-open",
                     "grok-2", "megrez"), _QWEN2_PRE),
    "qwen35": PreTokenizer((_QWEN35,)),
    "tekken": PreTokenizer((_TEKKEN,), ignore_merges=True, add_bos=True),
    **dict.fromkeys(("gpt-4o", "minimax-m2", "llama4", "kanana2", "talkie"), PreTokenizer((_GPT4O,))),
    **dict.fromkeys(("poro-chat", "bloom", "gpt3-finnish"),
                    PreTokenizer((" ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+",),
                                 cuts_before_space=False)),
}


def pre_tokenizer_for(name: str | None) -> PreTokenizer | None:
    """The table entry for a `tokenizer.ggml.pre` name (missing means llama.cpp's default), or None."""
    return PRE_TOKENIZERS.get(name or "default")


# A whitespace character with a space after it: that space is no sure cut. `re`'s \\s is exactly
# `str.isspace`, which counts U+001C-U+001F where the tokenizer's regexes do not: only fewer cuts.
_SPACE_AFTER_WHITESPACE = re.compile("\\s(?= )")


def space_chunks(text: str) -> tuple[str, list[str]]:
    """Cut `text` before every space that follows a non-whitespace character.

    Returns `(head, bodies)` with `text == head + "".join(" " + b for b in bodies)`. Where
    `cuts_before_space` holds, the pre-tokenizer cuts there too, so the chunks tokenize apart
    exactly as inside the whole text; and words recur, so counts of chunks are worth remembering.
    A space after whitespace stays with the chunk before it: `\\s+(?!\\S)` may join it to that run.
    Built from C-level string operations: a Python step per word would cost more than the
    tokenizer saves.
    """
    parts = text.split(" ")
    chunks: list[str] = []  # the head, then the bodies
    taken = 0  # parts[:taken] are in `chunks`
    spaces = counted_to = 0  # spaces in text[:counted_to]
    glue_from = glue_to = -1  # parts[glue_from:glue_to + 1] make one chunk, not yet in `chunks`
    for match in _SPACE_AFTER_WHITESPACE.finditer(text):
        spaces += text.count(" ", counted_to, match.end())
        counted_to = match.end()
        # This is space number `spaces`, between parts[spaces] and parts[spaces + 1].
        if spaces == glue_to:
            glue_to += 1
            continue
        if glue_from >= 0:
            chunks.append(" ".join(parts[glue_from:glue_to + 1]))
            taken = glue_to + 1
        chunks.extend(parts[taken:spaces])
        glue_from, glue_to = spaces, spaces + 1
    if glue_from >= 0:
        chunks.append(" ".join(parts[glue_from:glue_to + 1]))
        taken = glue_to + 1
    chunks.extend(parts[taken:])
    return chunks[0], chunks[1:]
