"""Choosing `options.num_ctx` for one request: big enough never to truncate, stable enough not to reload.

Ollama silently truncates a prompt longer than `num_ctx`, and reloads the model whenever the requested
`num_ctx` differs from the loaded runner's (reference ollama-api.md, sections 4.3 and 4.5). So the choice
is the smallest configured size that fits, except that a model already loaded with a context that fits
keeps it: a loaded model is grown when a request needs more and never shrunk.

Pure: everything arrives as values (the counted tokens, the model's trained maximum from `/api/show`,
the loaded context from `/api/ps`). This module must not know how those were obtained, nor about HTTP
beyond the route segment and header names it hands to the adapter.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any, Protocol

from ollama_proxy.core.context.counting import CountMethod


class SizeReason(StrEnum):
    """Why a size was chosen; sent to the client in a response header."""

    FITS_BUCKET = "fits-bucket"           # smallest configured size that fits; model not loaded
    GROWN = "grown"                       # loaded context too small: reload at the smallest size that fits
    REUSED_LOADED = "reused-loaded"       # the loaded context fits (or is the biggest on offer): no reload
    CLAMPED = "clamped-to-model-max"      # the size that fits is above the model's trained maximum
    FIXED_ROUTE = "fixed-route"           # /proxy-context/{size}/ chose it
    EXCEEDS_LARGEST = "exceeds-largest"   # nothing configured fits: the largest size


class ContextPolicy(Protocol):
    """The `context` settings sizing needs, `sizes` ascending; `config.schema.ContextConfig` satisfies it."""

    @property
    def sizes(self) -> tuple[int, ...]: ...
    @property
    def system_overhead_tokens(self) -> int: ...
    @property
    def safety_margin_tokens(self) -> int: ...
    @property
    def default_reply_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class SizingPolicy:
    """A plain copy of a `ContextPolicy`, taken once per configuration: reading a pydantic model's field
    costs several times a slot's, and every request reads four."""

    sizes: tuple[int, ...]
    system_overhead_tokens: int
    safety_margin_tokens: int
    default_reply_tokens: int

    @classmethod
    def of(cls, policy: ContextPolicy) -> SizingPolicy:
        return cls(policy.sizes, policy.system_overhead_tokens, policy.safety_margin_tokens,
                   policy.default_reply_tokens)


# Plain, not frozen: built on every request, and a frozen dataclass costs four times as much to build.
@dataclass(slots=True)
class SizeDecision:
    """The chosen `num_ctx` and the reasoning behind it (`detail`, written only when read: every
    request is sized, few are logged at DEBUG)."""

    num_ctx: int
    input_tokens: int
    required: int
    reason: SizeReason
    explanation: str | Callable[[], str] = field(compare=False, repr=False)
    # The request needs more than `num_ctx`: it may be truncated ("Request may exceed largest available
    # context!"); the adapter logs it and says so in a header.
    exceeds_largest: bool
    count_method: CountMethod
    # Ollama will (re)load the model for this request because the loaded context differs.
    reloads: bool = False

    @property
    def detail(self) -> str:
        explanation = self.explanation
        return explanation if isinstance(explanation, str) else explanation()

    def headers(self) -> dict[str, str]:
        """Response headers that explain the decision to the client."""
        # The members are their values (StrEnum): `.value`, an enum descriptor, costs several times a read.
        headers: dict[str, str] = {
            "X-Proxy-Context-Size": str(self.num_ctx),
            "X-Proxy-Context-Input-Tokens": str(self.input_tokens),
            "X-Proxy-Context-Required": str(self.required),
            "X-Proxy-Context-Reason": self.reason,
            "X-Proxy-Context-Count-Method": self.count_method,
        }
        if self.exceeds_largest:
            headers["X-Proxy-Context-Warning"] = "Request may exceed largest available context!"
        return headers


def reply_tokens(body: Mapping[str, Any]) -> int | None:
    """The reply budget a request asks for, or None when it leaves it to the default.

    Native requests use `options.num_predict` (-1 "until done" and -2 "fill the context" mean no budget);
    OpenAI shapes use `max_completion_tokens` or the older `max_tokens`.
    """
    options = body.get("options")
    # dict first: a parsed body's, and far cheaper to check than the Mapping ABC.
    if options is not None and isinstance(options, dict | Mapping):
        value = options.get("num_predict")
        if _is_budget(value):
            return value
    for key in _OPENAI_BUDGETS:
        value = body.get(key)
        if _is_budget(value):
            return value
    return None


_OPENAI_BUDGETS = ("max_completion_tokens", "max_tokens")


def _is_budget(value: object) -> bool:
    return type(value) is int and value >= 0  # type() is: a bool is no budget


def required_tokens(policy: ContextPolicy, input_tokens: int, reply: int | None) -> int:
    """What a request needs in its window: input, reply budget (None: `default_reply_tokens`), margins."""
    budget = policy.default_reply_tokens if reply is None else reply
    return input_tokens + budget + policy.system_overhead_tokens + policy.safety_margin_tokens


def choose_num_ctx(
    policy: ContextPolicy,
    *,
    input_tokens: int,
    reply: int | None,
    count_method: CountMethod,
    model_max: int | None = None,
    loaded_context: int | None = None,
    forced_size: int | None = None,
    required: int | None = None,
) -> SizeDecision:
    """Pick `num_ctx` for a request.

    `reply` is the request's reply budget (see `reply_tokens`; None means `default_reply_tokens`),
    `model_max` the model's trained context (`<arch>.context_length`, None if unknown),
    `loaded_context` the chosen backend's `/api/ps` `context_length` for this model (None if not loaded),
    `forced_size` the size of a `/proxy-context/{size}/` route, `required` what `required_tokens` gave
    for this input and reply when the caller has it already.
    """
    if required is None:
        required = required_tokens(policy, input_tokens, reply)
    # One decision built at the end: every request is sized, so no per-call closure.
    args: tuple[object, ...]
    if forced_size is not None:
        # Ollama caps an explicit num_ctx at the trained maximum itself; sending it unchanged keeps
        # the route's meaning visible in logs.
        num_ctx, reason, why, args = forced_size, SizeReason.FIXED_ROUTE, "route fixes {}", (forced_size,)
    elif loaded_context is not None and loaded_context >= required:
        num_ctx, reason = loaded_context, SizeReason.REUSED_LOADED
        why, args = "model already loaded with {}, which fits: no reload", (loaded_context,)
    else:
        sizes = policy.sizes
        at = bisect_left(sizes, required)
        if at == len(sizes):
            num_ctx, reason = sizes[-1], SizeReason.EXCEEDS_LARGEST
            why, args = "no configured size fits; largest is {}", (num_ctx,)
        elif loaded_context is not None:
            num_ctx, reason = sizes[at], SizeReason.GROWN
            why, args = "loaded context {} is too small; growing to {}", (loaded_context, num_ctx)
        else:
            num_ctx, reason = sizes[at], SizeReason.FITS_BUCKET
            why, args = "smallest configured size that fits is {}", (num_ctx,)
        if model_max is not None and num_ctx > model_max:
            num_ctx, reason = model_max, SizeReason.CLAMPED
            why, args = why + "; clamped to the model's trained maximum {}", (*args, model_max)
        if loaded_context is not None and loaded_context >= num_ctx:
            # Nothing we could choose fits, and the loaded context is at least as big: shrinking it
            # would cost a reload and make truncation worse.
            num_ctx, reason = loaded_context, SizeReason.REUSED_LOADED
            why, args = why + "; the loaded context {} is no smaller, so it is kept", (*args, loaded_context)
    return SizeDecision(num_ctx, input_tokens, required, reason,
                        partial(_explain, policy, input_tokens, reply, count_method, why, args),
                        required > num_ctx, count_method, loaded_context is not None and num_ctx != loaded_context)


def _explain(policy: ContextPolicy, input_tokens: int, reply: int | None, count_method: CountMethod, why: str,
             args: tuple[object, ...]) -> str:
    budget = policy.default_reply_tokens if reply is None else reply
    return (f"required {required_tokens(policy, input_tokens, reply)} = input {input_tokens} ({count_method.value}) "
            f"+ reply {budget} + overhead {policy.system_overhead_tokens} + margin {policy.safety_margin_tokens}; "
            + why.format(*args))
