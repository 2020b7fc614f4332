"""Ollama's request rules as pure functions: option types, keep_alive, num_ctx, reloads, truncation.

Each function mirrors one rule of the reference (docs: shared/reference/ollama-api.md, sections
3 and 4) for Ollama v0.30+, so the rules can be tested without a server. No I/O, no clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class SimError(Exception):
    """A request the simulated Ollama refuses; the handlers answer `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_INT_OPTIONS = frozenset({"num_ctx", "num_predict", "top_k", "repeat_last_n", "seed", "num_keep",
                          "num_batch", "num_gpu", "main_gpu", "num_thread", "draft_num_predict"})
_FLOAT_OPTIONS = frozenset({"temperature", "top_p", "min_p", "typical_p", "repeat_penalty",
                            "presence_penalty", "frequency_penalty"})
_BOOL_OPTIONS = frozenset({"use_mmap"})
_ARRAY_OPTIONS = frozenset({"stop"})
# Options the runner is started with; a different value on a later request reloads it.
LOAD_OPTIONS = ("num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread", "draft_num_predict")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_options(options: Any) -> dict[str, Any]:
    """Check option types as Ollama's `FromMap` does: a wrong JSON type is a 500.

    Integers given as floats are truncated, `null` values are skipped and unknown keys ignored.
    """
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise SimError(400, "json: cannot unmarshal options into Go value of type map[string]interface {}")
    clean: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key in _INT_OPTIONS:
            if not _is_number(value):
                raise SimError(500, f'option "{key}" must be of type integer')
            clean[key] = int(value)
        elif key in _FLOAT_OPTIONS:
            if not _is_number(value):
                raise SimError(500, f'option "{key}" must be of type float')
            clean[key] = float(value)
        elif key in _BOOL_OPTIONS:
            if not isinstance(value, bool):
                raise SimError(500, f'option "{key}" must be of type boolean')
            clean[key] = value
        elif key in _ARRAY_OPTIONS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SimError(500, f'option "{key}" must be of type array')
            clean[key] = value
    return clean


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: Any) -> float | None:
    """keep_alive in seconds: a number, or a Go duration string ("5m", "-1m", "1h30m").

    None means the request did not set it. A unit-less string such as "300" is a 400, as in Ollama.
    """
    if value is None:
        return None
    if _is_number(value):
        return float(value)
    if not isinstance(value, str):
        raise SimError(400, f"invalid keep_alive value {value!r}")
    sign, text = (-1.0, value[1:]) if value.startswith("-") else (1.0, value.lstrip("+"))
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            missing = not any(u in text for u in _UNIT_SECONDS)
            reason = "missing unit in duration" if missing else "invalid duration"
            raise SimError(400, f'time: {reason} "{value}"')
        total += float(match[1]) * _UNIT_SECONDS[match[2]]
        pos = match.end()
    if not text:
        raise SimError(400, f'time: invalid duration "{value}"')
    return sign * total


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    """What a runner is (or would be) started with; compared to decide on a reload (ref. 4.5)."""

    num_ctx: int
    # True when num_ctx came from the server default rather than the request or the Modelfile.
    automatic: bool
    shift: bool = True
    load_options: Mapping[str, Any] = field(default_factory=dict)


def resolve_settings(options: Mapping[str, Any], *, modelfile_num_ctx: int | None, default_num_ctx: int,
                     trained_context: int, shift: bool | None) -> RunnerSettings:
    """Resolve num_ctx: request option, then Modelfile, then the server default ("automatic").

    Values below 4 become 4 and everything is capped at the model's trained context.
    """
    if "num_ctx" in options:
        num_ctx, automatic = options["num_ctx"], False
    elif modelfile_num_ctx is not None:
        num_ctx, automatic = modelfile_num_ctx, False
    else:
        num_ctx, automatic = default_num_ctx, True
    num_ctx = min(max(num_ctx, 4), trained_context)
    load_options = {k: options[k] for k in LOAD_OPTIONS if k in options}
    return RunnerSettings(num_ctx, automatic, True if shift is None else shift, load_options)


def needs_reload(runner: RunnerSettings, wanted: RunnerSettings) -> bool:
    """The v0.30+ `needsReload`: automatic contexts are never compared with each other.

    An explicit 8192 after an automatic 4096 reloads, and a later request without num_ctx reloads
    again, because the runner is no longer automatic. `num_gpu` left at its default never counts.
    """
    if runner.shift != wanted.shift:
        return True
    if not (runner.automatic and wanted.automatic) and runner.num_ctx != wanted.num_ctx:
        return True
    keys = set(runner.load_options) | set(wanted.load_options)
    if wanted.load_options.get("num_gpu", -1) == -1:
        keys.discard("num_gpu")
    return any(runner.load_options.get(k) != wanted.load_options.get(k) for k in keys)


def kept_prompt_tokens(prompt_tokens: int, num_ctx: int, num_keep: int = 4) -> int:
    """Tokens left after token-level truncation (ref. 4.3): about half the window once it overflows."""
    if prompt_tokens < num_ctx:
        return prompt_tokens
    num_keep = min(max(num_keep, 0) + 1, num_ctx)  # +1: the BOS token is always kept too
    return num_ctx - (num_ctx - num_keep) // 2


def fit_messages(messages: Sequence[Mapping[str, Any]], count: Callable[[Sequence[Mapping[str, Any]]], int],
                 num_ctx: int) -> list[Mapping[str, Any]]:
    """Message-level truncation: drop the oldest non-system messages until the chat fits.

    System messages and the last message are always kept, even if the result still does not fit.
    """
    kept = list(messages)
    while count(kept) >= num_ctx:
        droppable = next((i for i, m in enumerate(kept[:-1]) if m.get("role") != "system"), None)
        if droppable is None:
            break
        del kept[droppable]
    return kept


def generation_budget(num_predict: int | None, num_ctx: int, prompt_tokens: int, shift: bool) -> int:
    """How many tokens may be generated: num_predict (-1: 10 x num_ctx), and the window without shift."""
    budget = 10 * num_ctx if num_predict is None or num_predict < 0 else num_predict
    if not shift:
        budget = min(budget, max(num_ctx - prompt_tokens, 0))
    return budget


def nanoseconds(seconds: float) -> int:
    return max(math.ceil(seconds * 1e9), 1)
