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

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
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
    """The `context` settings sizing needs; `config.schema.ContextConfig` satisfies it."""

    @property
    def sizes(self) -> tuple[int, ...]: ...
    @property
    def system_overhead_tokens(self) -> int: ...
    @property
    def safety_margin_tokens(self) -> int: ...
    @property
    def default_reply_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class SizeDecision:
    """The chosen `num_ctx` and the reasoning behind it."""

    num_ctx: int
    input_tokens: int
    required: int
    reason: SizeReason
    detail: str
    # The request needs more than `num_ctx`: it may be truncated ("Request may exceed largest available
    # context!"); the adapter logs it and says so in a header.
    exceeds_largest: bool
    count_method: CountMethod
    # Ollama will (re)load the model for this request because the loaded context differs.
    reloads: bool = False

    def headers(self) -> dict[str, str]:
        """Response headers that explain the decision to the client."""
        headers = {
            "X-Proxy-Context-Size": str(self.num_ctx),
            "X-Proxy-Context-Input-Tokens": str(self.input_tokens),
            "X-Proxy-Context-Required": str(self.required),
            "X-Proxy-Context-Reason": self.reason.value,
            "X-Proxy-Context-Count-Method": self.count_method.value,
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
    candidates = [options.get("num_predict") if isinstance(options, Mapping) else None,
                  body.get("max_completion_tokens"), body.get("max_tokens")]
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def choose_num_ctx(
    policy: ContextPolicy,
    *,
    input_tokens: int,
    reply: int | None,
    count_method: CountMethod,
    model_max: int | None = None,
    loaded_context: int | None = None,
    forced_size: int | None = None,
) -> SizeDecision:
    """Pick `num_ctx` for a request.

    `reply` is the request's reply budget (see `reply_tokens`; None means `default_reply_tokens`),
    `model_max` the model's trained context (`<arch>.context_length`, None if unknown),
    `loaded_context` the chosen backend's `/api/ps` `context_length` for this model (None if not loaded),
    `forced_size` the size of a `/proxy-context/{size}/` route.
    """
    budget = policy.default_reply_tokens if reply is None else reply
    required = input_tokens + budget + policy.system_overhead_tokens + policy.safety_margin_tokens
    parts = (f"required {required} = input {input_tokens} ({count_method.value}) + reply {budget} "
             f"+ overhead {policy.system_overhead_tokens} + margin {policy.safety_margin_tokens}")

    def decide(num_ctx: int, reason: SizeReason, why: str) -> SizeDecision:
        return SizeDecision(
            num_ctx=num_ctx, input_tokens=input_tokens, required=required, reason=reason,
            detail=f"{parts}; {why}", exceeds_largest=required > num_ctx, count_method=count_method,
            reloads=loaded_context is not None and num_ctx != loaded_context)

    if forced_size is not None:
        # Ollama caps an explicit num_ctx at the trained maximum itself; sending it unchanged keeps
        # the route's meaning visible in logs.
        return decide(forced_size, SizeReason.FIXED_ROUTE, f"route fixes {forced_size}")
    if loaded_context is not None and loaded_context >= required:
        return decide(loaded_context, SizeReason.REUSED_LOADED,
                      f"model already loaded with {loaded_context}, which fits: no reload")

    sizes = sorted(policy.sizes)
    fitting = next((s for s in sizes if s >= required), None)
    if fitting is None:
        candidate, reason = sizes[-1], SizeReason.EXCEEDS_LARGEST
        why = f"no configured size fits; largest is {candidate}"
    elif loaded_context is not None:
        candidate, reason = fitting, SizeReason.GROWN
        why = f"loaded context {loaded_context} is too small; growing to {fitting}"
    else:
        candidate, reason = fitting, SizeReason.FITS_BUCKET
        why = f"smallest configured size that fits is {fitting}"

    if model_max is not None and candidate > model_max:
        candidate, reason = model_max, SizeReason.CLAMPED
        why += f"; clamped to the model's trained maximum {model_max}"
    if loaded_context is not None and loaded_context >= candidate:
        # Nothing we could choose fits, and the loaded context is at least as big: shrinking it
        # would cost a reload and make truncation worse.
        return decide(loaded_context, SizeReason.REUSED_LOADED,
                      f"{why}; the loaded context {loaded_context} is no smaller, so it is kept")
    return decide(candidate, reason, why)
