"""The context engine as the server uses it: count a request's prompt, pick `num_ctx` on the chosen
backend, learn from what Ollama reports back.

The decisions are `core.context`'s; this module gathers their inputs without slowing requests:
model facts come from `/api/show` once per backend and model, the exact tokenizer is built from
verbose `/api/show` in the background (off the event loop) and used from the next request on,
and until then counts are calibrated estimates.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from ollama_proxy.config.schema import ContextConfig
from ollama_proxy.core.context.calibration import Calibrator, Truncation, judge_truncation
from ollama_proxy.core.context.counting import CachedCounter, PromptCount, count_prompt, prompt_parts
from ollama_proxy.core.context.model_facts import trained_context_length
from ollama_proxy.core.context.sizing import (
    SizeDecision,
    SizingPolicy,
    choose_num_ctx,
    reply_tokens,
    required_tokens,
)
from ollama_proxy.core.context.tokenizer import TokenizerUnavailable, build_tokenizer
from ollama_proxy.core.lru import LruCache
from ollama_proxy.core.ollama_api import canonical_model
from ollama_proxy.core.operations import Operation
from ollama_proxy.errors import OllamaProxyError
from ollama_proxy.service.pool import Backend, BackendPool
from ollama_proxy.service.tasks import TaskSet

log = logging.getLogger("ollama_proxy.context")

SHOW_TIMEOUT_S = 5.0
# The verbose /api/show body can be many MB: allow it time, but it never blocks a request.
VERBOSE_SHOW_TIMEOUT_S = 60.0
_MAX_TOKENIZERS = 8
# About 5,000 tokens, 15 ms of encoding on two cores: more than that is counted off the event loop.
_OFF_LOOP_CHARS = 20_000
_UNKNOWN: Any = object()  # no /api/show asked yet (None: asked, and it did not say)


@dataclass(slots=True)
class Sizing:
    """One request's count, the reply budget and tokens it needs (`ContextService.required`, before
    routing) and the size chosen for it; kept on the exchange to check the answer."""

    model: str
    count: PromptCount
    reply: int | None = None
    required: int | None = None
    decision: SizeDecision | None = None


class ContextService:
    def __init__(self, config: ContextConfig, pool: BackendPool, tasks: TaskSet) -> None:
        self.config = config
        # Copied out of the pydantic model once: read on every request.
        self._policy = SizingPolicy.of(config)
        self._exact_tokenizer, self._truncation_ratio = config.exact_tokenizer, config.truncation_ratio
        self._pool = pool
        self._tasks = tasks
        self.calibrator = Calibrator(truncation_ratio=config.truncation_ratio)
        self._trained_max: dict[tuple[str, str], int | None] = {}
        # By model digest; None = no tokenizer can be built for it. Each tokenizer holds 3-133 MB.
        self._counters: LruCache[str, tuple[CachedCounter, asyncio.Lock] | None] = LruCache(_MAX_TOKENIZERS)
        self._building: set[str] = set()
        self.truncations = 0
        self.decisions = 0

    def take_over(self, previous: ContextService) -> None:
        """Keep what the service a configuration reload replaces had learned: calibrations, tokenizers,
        models' trained lengths, the counts."""
        self.calibrator, self._counters, self._trained_max = (previous.calibrator, previous._counters,
                                                              previous._trained_max)
        self.truncations, self.decisions = previous.truncations, previous.decisions

    async def count(self, model: str, body: dict[str, Any], backend_hint: Backend | None) -> Sizing:
        """Count the prompt with the best method available right now (never waits on the network).

        A long text the exact tokenizer has not seen takes tens of milliseconds to encode: that runs
        in a worker thread so other streams keep flowing. The lock keeps the counter's cache to one
        user at a time (same-model requests wait for each other, nothing else does).
        """
        key = canonical_model(model)
        parts = prompt_parts(body)
        estimate, overhead = self.calibrator.counting(key)
        exact = self._counter_for(key, backend_hint) if self._exact_tokenizer else None
        if exact is None:
            return Sizing(key, count_prompt(parts, estimate=estimate, overhead=overhead))
        counter, lock = exact
        async with lock:
            if counter.uncached_chars(parts.texts) < _OFF_LOOP_CHARS:
                count = count_prompt(parts, exact=counter, estimate=estimate, overhead=overhead)
            else:
                count = await asyncio.to_thread(count_prompt, parts, exact=counter, estimate=estimate,
                                                overhead=overhead)
        return Sizing(key, count)

    def required(self, sizing: Sizing, operation: Operation, body: dict[str, Any]) -> int:
        """Tokens the request needs, before any backend is chosen (routing prefers one that fits);
        kept on `sizing` with the reply budget, for `size`."""
        sizing.reply = reply = self.reply_budget(operation, body)
        sizing.required = required = required_tokens(self._policy, sizing.count.tokens, reply)
        return required

    @staticmethod
    def reply_budget(operation: Operation, body: dict[str, Any]) -> int | None:
        """The reply length the request asks for (None: it leaves it open); an embedding has none."""
        # Identity tests: cheaper than hashing into a set, and this runs on every request.
        return 0 if operation is Operation.EMBED or operation is Operation.EMBEDDINGS else reply_tokens(body)

    async def size(self, sizing: Sizing, backend: Backend, body: dict[str, Any], forced: int | None) -> SizeDecision:
        """Choose `num_ctx` for this backend and write it into `body["options"]` (after `required`)."""
        model, count = sizing.model, sizing.count
        model_max = self._trained_max.get((backend.id, model), _UNKNOWN)
        if model_max is _UNKNOWN:
            model_max = await self._model_max(backend, model)
        decision = choose_num_ctx(
            self._policy, input_tokens=count.tokens, reply=sizing.reply, count_method=count.method,
            model_max=model_max, loaded_context=backend.loaded.get(model), forced_size=forced,
            required=sizing.required)
        options = body.get("options")
        body["options"] = {**options, "num_ctx": decision.num_ctx} if isinstance(options, dict) else \
            {"num_ctx": decision.num_ctx}
        # Ollama loads (or keeps) the runner at this size.
        self._pool.assume_loaded(backend, model, min(decision.num_ctx, model_max) if model_max
                                 else decision.num_ctx)
        sizing.decision = decision
        self.decisions += 1
        if decision.exceeds_largest:
            log.warning("Request may exceed largest available context! model=%s backend=%s %s",
                        sizing.model, backend.id, decision.detail)
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("num_ctx=%d for %s on %s: %s (%s)", decision.num_ctx, sizing.model, backend.id,
                      decision.reason.value, decision.detail)
        return decision

    def observe(self, sizing: Sizing, final: dict[str, Any], backend: Backend) -> Truncation | None:
        """Learn from the final response line; returns the truncation if Ollama cut the prompt."""
        evaluated = final.get("prompt_eval_count")
        if not isinstance(evaluated, int):
            return None
        num_ctx = sizing.decision.num_ctx if sizing.decision is not None else None
        truncation = judge_truncation(sizing.count, evaluated, num_ctx, self._truncation_ratio)
        self.calibrator.observe(sizing.model, sizing.count, evaluated, num_ctx, truncation)
        if truncation.truncated:
            self.truncations += 1
            log.warning("Ollama evaluated fewer prompt tokens than were sent: model=%s backend=%s counted=%d "
                        "prompt_eval_count=%d num_ctx=%s (%s)", sizing.model, backend.id, sizing.count.tokens,
                        evaluated, num_ctx, sizing.count.method.value)
            return truncation
        return None

    def stats(self) -> dict[str, Any]:
        return {"decisions": self.decisions, "truncations_detected": self.truncations,
                "exact_tokenizers": sorted(d for d, c in self._counters.items() if c is not None)}

    async def _model_max(self, backend: Backend, model: str) -> int | None:
        key = (backend.id, model)
        if key not in self._trained_max:
            try:
                shown = await backend.client.get_json("/api/show", method="POST", body={"model": model},
                                                        timeout_s=SHOW_TIMEOUT_S)
                self._trained_max[key] = trained_context_length(shown.get("model_info") or {})
            except (OllamaProxyError, AttributeError) as exc:
                # Unknown stays unknown for this request; Ollama caps num_ctx itself anyway.
                log.debug("no model facts for %s on %s: %s", model, backend.id, exc)
                return None
        return self._trained_max[key]

    def _counter_for(self, model: str, backend: Backend | None) -> tuple[CachedCounter, asyncio.Lock] | None:
        if backend is None or not backend.is_ollama:
            return None
        digest = backend.digests.get(model)  # `model` is canonical already
        if digest is None:
            return None
        if digest in self._counters:
            return self._counters.get(digest)
        if digest not in self._building:
            self._building.add(digest)
            self._tasks.spawn(self._build_counter(backend, model, digest), name=f"tokenizer-{model}")
        return None

    async def _build_counter(self, backend: Backend, model: str, digest: str) -> None:
        try:
            shown = await backend.client.get_json("/api/show", method="POST",
                                                    body={"model": model, "verbose": True},
                                                    timeout_s=VERBOSE_SHOW_TIMEOUT_S)
            tokenizer = await asyncio.to_thread(build_tokenizer, shown.get("model_info") or {})
        except (OllamaProxyError, TokenizerUnavailable, AttributeError) as exc:
            log.info("%s: counting tokens by calibrated estimate (its tokenizer could not be read from %s)",
                     model, backend.id)
            log.debug("no exact tokenizer for %s: %s", model, exc)
            self._counters.put(digest, None)
        else:
            log.info("%s: counting tokens exactly with the model's own tokenizer", model)
            self._counters.put(digest, (CachedCounter(tokenizer.count_many), asyncio.Lock()))
        finally:
            self._building.discard(digest)
