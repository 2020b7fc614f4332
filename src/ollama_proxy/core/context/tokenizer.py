"""The model's own tokenizer, rebuilt from the GGUF metadata that `/api/show` (verbose) returns.

Ollama's runner is llama.cpp, so the goal is llama.cpp's token ids, not the Hugging Face ones: the
vocabulary, merges and special tokens come from `model_info["tokenizer.ggml.*"]`, the pre-tokenizer
regexes from llama.cpp's own table (`pretokenizers.py`), and the well-kept `tokenizers` library does the
work. See /work/shared/reference/token-counting.md for how exact this is per vocabulary.

Pure: takes the already-parsed `model_info` dict. Fetching `/api/show` (0.7-14 MB, 5-220 ms to parse)
happens in the adapter, once per model digest and off the request path; an LRU (`core.lru.LruCache`) keeps the
results.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers

from ollama_proxy.core.context.pretokenizers import PreTokenizer, pre_tokenizer_for, space_chunks

# GGUF `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
_UNKNOWN, _CONTROL, _USER_DEFINED, _BYTE = 2, 3, 4, 6
# llama.cpp matches these whole, before any normalisation, when it parses special tokens.
_SPECIAL_TYPES = frozenset({_UNKNOWN, _CONTROL, _USER_DEFINED})
_SPACE_MARK = "\u2581"  # SentencePiece's visible space
# Below this many texts, joining them for one encoding saves less than it costs.
_JOIN_FROM = 16
# Sequences a join is spread over: a few per core, so the library's threads share the work.
_JOINED_SEQUENCES = 4
# Unseen chunks above which, if they are most of the chunks, texts are counted whole, unremembered.
# High enough that a new conversation's messages and a first document in a known language are
# still remembered.
_NOVEL_FROM = 2048
# llama.cpp recognises end-of-generation and fill-in-the-middle tokens by their text and treats them as
# control tokens even where the GGUF marks them normal (llama-vocab.cpp, "auto-detect special tokens by
# text"); Qwen2's vocabulary has a normal "</s>", for one.
_CONTROL_BY_TEXT = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\uff5cend\u2581of\u2581sentence\uff5c>", "[e~[", "<|channel|>", "<|message|>", "<|start|>",
    "<|constrain|>", "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\uff5cfim\u2581begin\uff5c>",
    "<PRE>", "\u2581<PRE>", "<|code_prefix|>", "<|prefix|>", "<|fim_suffix|>", "<fim-suffix>",
    "<fim_suffix>", "<\uff5cfim\u2581hole\uff5c>", "<SUF>", "\u2581<SUF>", "<|code_suffix|>", "<|suffix|>",
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\uff5cfim\u2581end\uff5c>", "<MID>", "\u2581<MID>",
    "<|code_middle|>", "<|middle|>", "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]",
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
})


class TokenizerUnavailable(ValueError):
    """The metadata cannot give an exact tokenizer (not verbose, or a vocabulary type we do not build)."""


@dataclass(frozen=True, slots=True)
class GgufTokenizer:
    """A built tokenizer plus the BOS/EOS rules llama.cpp applies on top of it.

    Counting is the hot path (a 32K-token prompt per request), and the library spends about 2
    microseconds of bookkeeping per pre-tokenizer piece whatever the model does. So where the
    pre-tokenizer always cuts before a space (`cuts_at_spaces`), texts are counted as
    `space_chunks`, each chunk's count remembered (`chunk_memo` of them at most): words recur, and a
    text's count is then mostly dictionary look-ups. Counts never ask for offsets, whose conversion
    to character positions costs as much again.
    """

    tokenizer: Tokenizer
    add_bos: bool
    add_eos: bool
    bos_id: int | None
    eos_id: int | None
    cuts_at_spaces: bool = False
    # A special token (text, id) that can join chunks for one encoding: see `_chunk_counts`.
    separator: tuple[str, int] | None = None
    chunk_memo: int = 1 << 16
    # Token count of " " + body, by body (see `space_chunks`); bounded by `chunk_memo`.
    _chunks: dict[str, int] = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def special_count(self) -> int:
        """Tokens llama.cpp adds around a whole prompt (BOS and/or EOS)."""
        return int(self.add_bos and self.bos_id is not None) + int(self.add_eos and self.eos_id is not None)

    def encode(self, text: str, *, add_special: bool = True) -> list[int]:
        """Token ids as `llama_tokenize(text, add_special, parse_special=True)` gives them."""
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False).ids
        if not add_special:
            return ids
        head = [self.bos_id] if self.add_bos and self.bos_id is not None else []
        tail = [self.eos_id] if self.add_eos and self.eos_id is not None else []
        return head + ids + tail

    def count(self, text: str) -> int:
        """Tokens in `text` alone (no BOS/EOS), the unit that chat counting adds up."""
        return self.count_many((text,))[0]

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Like `count` for several texts at once; the library spreads what it encodes over its
        threads and releases the GIL meanwhile. One caller at a time per tokenizer (the chunk memo
        is not locked; the adapter holds a lock per model's counter)."""
        if not self.cuts_at_spaces:
            return self._encoded_lengths(texts)
        split = [space_chunks(text) for text in texts]
        memo = self._chunks
        missing = list({body: None for _, bodies in split for body in bodies if body not in memo})
        if len(missing) > _NOVEL_FROM and 2 * len(missing) > sum(len(bodies) for _, bodies in split):
            # Mostly new words (identifiers, hashes, another language): remembering them costs more
            # than it would save, and counting whole texts is faster than counting each chunk.
            return self._encoded_lengths(texts)
        counts = self._chunk_counts([head for head, _ in split] + [" " + body for body in missing])
        memo.update(zip(missing, counts[len(split):], strict=True))
        totals = [head + sum(map(memo.__getitem__, bodies))
                  for head, (_, bodies) in zip(counts[:len(split)], split, strict=True)]
        if len(memo) > self.chunk_memo:  # drop the oldest quarter at once rather than one per call
            for body in list(islice(memo, len(memo) - self.chunk_memo * 3 // 4)):
                del memo[body]
        return totals

    def _chunk_counts(self, chunks: list[str]) -> list[int]:
        """Token counts of many short texts, each tokenized on its own.

        Encoded one by one, they would cost the library about 15 microseconds each in per-sequence
        work, more than the tokenizing. Joined by the separator special token, which the library
        cuts at before anything else, they become a few long sequences (a few, to use both cores),
        and each chunk's count is the run of ids between two separator ids.
        """
        if self.separator is None or len(chunks) < _JOIN_FROM:
            return self._encoded_lengths(chunks)
        separator, separator_id = self.separator
        if any(separator in chunk for chunk in chunks):
            return self._encoded_lengths(chunks)
        step = -(-len(chunks) // _JOINED_SEQUENCES)
        joined = [separator.join(chunks[i:i + step]) for i in range(0, len(chunks), step)]
        counts: list[int] = []
        for encoding in self.tokenizer.encode_batch_fast(joined, add_special_tokens=False):
            ids: list[int] = encoding.ids
            start = 0
            for _ in range(ids.count(separator_id)):
                end = ids.index(separator_id, start)
                counts.append(end - start)
                start = end + 1
            counts.append(len(ids) - start)
        return counts

    def _encoded_lengths(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(e) for e in self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]


def build_tokenizer(model_info: Mapping[str, Any]) -> GgufTokenizer:
    """Build the tokenizer a model's runner uses from its `/api/show` (verbose) `model_info`.

    Raises TokenizerUnavailable when the arrays are missing (a non-verbose show returns them empty)
    or the vocabulary type is one we do not reproduce (`bert`, `t5`, unknown `pre` names).
    """
    kind = model_info.get("tokenizer.ggml.model")
    tokens: list[str] = list(model_info.get("tokenizer.ggml.tokens") or ())
    if not tokens:
        raise TokenizerUnavailable("model_info has no tokenizer.ggml.tokens (was /api/show called verbose?)")
    tokens = [t or f"[EMPTY_{i}]" for i, t in enumerate(tokens)]  # as llama.cpp names empty entries
    types: list[int] = list(model_info.get("tokenizer.ggml.token_type") or ())
    # SentencePiece-style vocabularies have no pre-tokenizer: merges may run across spaces.
    cuts_at_spaces = False
    if kind == "gpt2":
        tokenizer, pre = _byte_level_bpe(model_info, tokens)
        add_bos, cuts_at_spaces = pre.add_bos, pre.cuts_before_space
    elif kind == "llama":
        tokenizer, add_bos = _sentencepiece_bpe(model_info, tokens, types), True
    elif kind == "gemma4":
        tokenizer, add_bos = _gemma4_bpe(model_info, tokens), True
    else:
        raise TokenizerUnavailable(f"tokenizer.ggml.model {kind!r} is not supported (gpt2, llama, gemma4)")
    specials = _add_special_tokens(tokenizer, tokens, types)
    # A special token is matched whole before any regex runs; a cut inside one would break it.
    cuts_at_spaces = cuts_at_spaces and not any(" " in special for special in specials)
    separator = _separator(specials)
    add_bos = bool(model_info.get("tokenizer.ggml.add_bos_token", add_bos))
    if kind == "gemma4":
        add_bos = True  # llama.cpp overrides the metadata for Gemma 4 (llama.cpp PR #21500)
    return GgufTokenizer(
        tokenizer=tokenizer,
        add_bos=add_bos,
        add_eos=bool(model_info.get("tokenizer.ggml.add_eos_token", False)),
        bos_id=_optional_int(model_info.get("tokenizer.ggml.bos_token_id")),
        eos_id=_optional_int(model_info.get("tokenizer.ggml.eos_token_id")),
        cuts_at_spaces=cuts_at_spaces,
        separator=_separator_with_id(tokenizer, separator),
    )


def _vocab(tokens: Iterable[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for i, token in enumerate(tokens):
        vocab.setdefault(token, i)  # a duplicated token keeps its first id
    return vocab


def _split_merges(raw: Iterable[str], vocab: Mapping[str, int]) -> list[tuple[str, str]]:
    merges = []
    for merge in raw:
        # At the first space after position 0: a merge may start with a space-like token (llama.cpp).
        pos = merge.find(" ", 1)
        if pos < 0:
            continue
        left, right = merge[:pos], merge[pos + 1:]
        if left in vocab and right in vocab and left + right in vocab:
            merges.append((left, right))
    return merges


def _byte_level_bpe(model_info: Mapping[str, Any], tokens: list[str]) -> tuple[Tokenizer, PreTokenizer]:
    pre_name = model_info.get("tokenizer.ggml.pre")
    pre = pre_tokenizer_for(pre_name)
    if pre is None:
        raise TokenizerUnavailable(f"tokenizer.ggml.pre {pre_name!r} has no known pre-tokenizer")
    vocab = _vocab(tokens)
    merges = _split_merges(model_info.get("tokenizer.ggml.merges") or (), vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=pre.ignore_merges))
    splits: list[pre_tokenizers.PreTokenizer] = [
        pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
    # llama.cpp applies its own regexes, then maps bytes to the GPT-2 alphabet without a regex of its own.
    splits.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(splits)
    return tokenizer, pre


def _sentencepiece_bpe(model_info: Mapping[str, Any], tokens: list[str], types: list[int]) -> Tokenizer:
    """SentencePiece as llama.cpp runs it: greedy merges of the best-scoring pair, bytes as fallback.

    That is BPE whose merge ranks follow the score of the merged token, so the merges are derived
    from the scores here.
    """
    vocab = _vocab(tokens)
    scores: list[float] = list(model_info.get("tokenizer.ggml.scores") or ())
    if len(scores) < len(tokens):
        raise TokenizerUnavailable("model_info has fewer tokenizer.ggml.scores than tokens")
    ranked: list[tuple[float, int, int, int, str, str]] = []
    for token, tid in vocab.items():
        if len(token) < 2 or (types and types[tid] == _BYTE):
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            lid, rid = vocab.get(left), vocab.get(right)
            if lid is not None and rid is not None:
                ranked.append((-scores[tid], tid, lid, rid, left, right))
    ranked.sort()
    unk = next((tokens[i] for i, t in enumerate(types) if t == _UNKNOWN), None)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[(r[4], r[5]) for r in ranked],
                                     unk_token=unk, byte_fallback=True, fuse_unk=True))
    steps: list[normalizers.Normalizer] = []
    if model_info.get("tokenizer.ggml.add_space_prefix", True):
        # llama.cpp prefixes a space to every text fragment that starts the prompt or follows a special
        # token; the library normalises each fragment between special tokens separately, which matches.
        steps.append(normalizers.Prepend(_SPACE_MARK))
    steps.append(normalizers.Replace(" ", _SPACE_MARK))
    tokenizer.normalizer = normalizers.Sequence(steps)
    return tokenizer


def _gemma4_bpe(model_info: Mapping[str, Any], tokens: list[str]) -> Tokenizer:
    """Gemma 4: SentencePiece-style BPE over raw UTF-8 with real merges, split only at newlines."""
    vocab = _vocab(tokens)
    merges = _split_merges(model_info.get("tokenizer.ggml.merges") or (), vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True))
    if model_info.get("tokenizer.ggml.add_space_prefix", False):
        tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend(_SPACE_MARK),
                                                     normalizers.Replace(" ", _SPACE_MARK)])
    else:
        tokenizer.normalizer = normalizers.Replace(" ", _SPACE_MARK)
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("[^\\n]+|[\\n]+"), behavior="isolated")
    return tokenizer


def _add_special_tokens(tokenizer: Tokenizer, tokens: list[str], types: list[int]) -> list[str]:
    ids = {i for i, kind in enumerate(types) if kind in _SPECIAL_TYPES}
    ids.update(i for i, token in enumerate(tokens) if token in _CONTROL_BY_TEXT)
    if "<|tool_response>" in tokens and "</s>" in tokens:
        ids.discard(tokens.index("</s>"))  # Gemma 4 keeps "</s>" a normal token (llama.cpp)
    special = [tokens[i] for i in sorted(ids)]
    if special:
        tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    return special


def _separator(specials: list[str]) -> str | None:
    """A special token no other one can be matched across when it stands between two texts.

    The library matches special tokens leftmost-longest, so another one that contains it, or ends
    with the start of it, could start in the text before it and swallow it.
    """
    for candidate in specials:
        if all(candidate not in other and not any(other.endswith(candidate[:k]) for k in range(1, len(candidate)))
               for other in specials if other != candidate):
            return candidate
    return None


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _separator_with_id(tokenizer: Tokenizer, token: str | None) -> tuple[str, int] | None:
    """The separator special token and its id, when the vocabulary really has it."""
    token_id = None if token is None else tokenizer.token_to_id(token)
    return None if token is None or token_id is None else (token, token_id)
