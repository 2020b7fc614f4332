"""Counting the tokens Ollama will evaluate for a request, before sending it.

What Ollama tokenizes is the rendered prompt: the chat template wraps each message in special tokens,
then comes the text (system, messages, thinking, tool calls, tool definitions), and each image costs a
fixed 768 tokens (reference ollama-api.md 3.6). Special tokens split the text before anything else, so
counting each piece of text on its own and adding a per-message template overhead is exact up to that
overhead, which `calibration.py` learns. Chats grow by appending, so each piece's count is cached: the
next turn only tokenizes the new messages.

Pure: it takes request bodies as parsed JSON and a token counter; it must not know where the
tokenizer came from or how the estimate's ratio was learned.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

# Ollama's own estimate for an image when it decides what to truncate (reference 3.6).
IMAGE_TOKENS = 768
DEFAULT_CHARS_PER_TOKEN = 4.0


class CountMethod(StrEnum):
    """How a count was made, best first; sent to the client in a header."""

    EXACT = "exact"              # the model's own tokenizer
    CALIBRATED = "calibrated"    # characters per token learned from this model's prompt_eval_count
    HEURISTIC = "chars/4"        # nothing learned yet


@dataclass(frozen=True, slots=True)
class TemplateOverhead:
    """Tokens the chat template adds: per message (role markers) and once (BOS, generation prompt).

    The defaults fit ChatML and Llama 3 (`<|im_start|>user\\n ... <|im_end|>\\n` is 5 tokens).
    """

    per_message: float = 5.0
    fixed: int = 6


# Plain, not frozen: calibration builds one on every answer it learns from.
@dataclass(slots=True)
class CharEstimate:
    """Characters per token for a model when no tokenizer is at hand."""

    chars_per_token: float = DEFAULT_CHARS_PER_TOKEN
    method: CountMethod = CountMethod.HEURISTIC


_CHARS_PER_4 = CharEstimate()


# Plain, not frozen: built on every request, and a frozen dataclass costs four times as much to build.
@dataclass(slots=True)
class PromptParts:
    """The text pieces and images of a request, in prompt order."""

    texts: tuple[str, ...]
    images: int
    messages: int


# Plain, not frozen: built on every request, and a frozen dataclass costs four times as much to build.
@dataclass(slots=True)
class PromptCount:
    """The counted size of a prompt, with its parts kept apart so calibration can learn from them."""

    tokens: int
    method: CountMethod
    chars: int
    text_tokens: int
    overhead_tokens: int
    image_tokens: int
    messages: int


class CachedCounter:
    """Token counts of texts by a tokenizer, remembered per text (least recently used dropped first).

    One instance per tokenizer (per model digest): the same text counts differently in another model.
    """

    def __init__(self, count_many: Callable[[Sequence[str]], list[int]], max_entries: int = 4096) -> None:
        self._count_many = count_many
        self._max_entries = max_entries
        self._counts: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._counts)

    def uncached_chars(self, texts: Sequence[str]) -> int:
        """Characters `count` would have to tokenize: the adapter runs big ones off the event loop.
        That costs about 0.3 microseconds per token where the tokenizer has seen the words before
        and up to 3 where nearly every word is new (two cores; the library releases the GIL)."""
        return sum(len(t) for t in texts if t not in self._counts)

    def count(self, texts: Sequence[str]) -> int:
        """The summed token count of `texts`, tokenizing only the ones not seen before."""
        total = 0
        missing: list[str] = []
        for text in texts:
            cached = self._counts.get(text)
            if cached is None:
                missing.append(text)
            else:
                self._counts.move_to_end(text)
                total += cached
        if missing:
            for text, count in zip(missing, self._count_many(missing), strict=True):
                self._counts[text] = count
                total += count
            while len(self._counts) > self._max_entries:
                self._counts.popitem(last=False)
        return total


def prompt_parts(body: Mapping[str, Any]) -> PromptParts:
    """The pieces of a chat, generate or embed body (native or OpenAI shape) that become prompt tokens."""
    texts: list[str] = []
    images = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            # Most messages are a role and a text: taken without asking for the other fields.
            if type(message) is dict and len(message) == 2 and "role" in message:
                content = message.get("content")
                if type(content) is str:
                    if content:
                        texts.append(content)
                    continue
            if isinstance(message, dict | Mapping):
                images += _message_parts(message, texts)
        if body.get("tools"):
            texts.append(_json(body["tools"]))
        return PromptParts(tuple(texts), images, len(messages))
    for key in ("system", "prompt", "suffix"):
        _add_text(body.get(key), texts)
    embed_input = body.get("input")
    if isinstance(embed_input, str):
        texts.append(embed_input)
    elif isinstance(embed_input, list):
        texts.extend(t for t in embed_input if isinstance(t, str))
    images += _image_count(body.get("images"))
    return PromptParts(tuple(texts), images, 1 if texts or images else 0)


def count_prompt(
    parts: PromptParts,
    *,
    exact: CachedCounter | None = None,
    estimate: CharEstimate = _CHARS_PER_4,
    overhead: TemplateOverhead = TemplateOverhead(),
) -> PromptCount:
    """Count `parts` exactly when a tokenizer's `CachedCounter` is given, else with `estimate`: text
    tokens, `overhead.fixed` plus `overhead.per_message` per message, `IMAGE_TOKENS` per image."""
    texts, messages = parts.texts, parts.messages
    chars = sum(map(len, texts))
    if exact is not None:
        text_tokens, method = exact.count(texts), CountMethod.EXACT
    else:
        text_tokens, method = math.ceil(chars / estimate.chars_per_token), estimate.method
    overhead_tokens = overhead.fixed + math.ceil(overhead.per_message * messages) if messages else 0
    image_tokens = parts.images * IMAGE_TOKENS
    return PromptCount(text_tokens + overhead_tokens + image_tokens, method, chars, text_tokens, overhead_tokens,
                       image_tokens, messages)


def _message_parts(message: Mapping[str, Any], texts: list[str]) -> int:
    images = _image_count(message.get("images"))
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts
        for part in content:
            if not isinstance(part, Mapping):
                continue
            if part.get("type") == "text":
                _add_text(part.get("text"), texts)
            elif part.get("type") in ("image_url", "input_image"):
                images += 1
    else:
        _add_text(content, texts)
    _add_text(message.get("thinking"), texts)
    _add_text(message.get("reasoning_content"), texts)
    calls = message.get("tool_calls")
    if calls:
        texts.append(_json(calls))
    return images


def _add_text(value: object, texts: list[str]) -> None:
    if isinstance(value, str) and value:
        texts.append(value)


def _image_count(images: object) -> int:
    return len(images) if isinstance(images, list) else 0


def _json(value: object) -> str:
    # Templates render tool definitions and calls as JSON; the exact spacing varies by template,
    # compact JSON is close and the remainder is calibrated away.
    return orjson.dumps(value).decode()

