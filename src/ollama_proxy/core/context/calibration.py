"""Learning from `prompt_eval_count`: characters per token, template overhead, and truncation.

Every response that passes through the proxy says how many prompt tokens Ollama evaluated. Compared
with what the proxy counted, that gives three things:
- a characters-per-token ratio per model, for models whose tokenizer cannot be had (starting from the
  plain characters/4 rule before the first observation);
- the per-message template overhead per model, when the text was counted exactly;
- silent truncation: Ollama evaluating clearly fewer tokens than were sent (reference 4.3).

Since Ollama v0.30 `prompt_eval_count` includes the cached prefix; older releases counted only newly
processed tokens, so a cached prefix there looks like truncation. Such observations are rejected, not
learned from, which keeps the ratio sane on either version.

Pure: observations arrive as numbers; this module must not know about streams or HTTP.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ollama_proxy.core.context.counting import (
    DEFAULT_CHARS_PER_TOKEN,
    CharEstimate,
    CountMethod,
    PromptCount,
    TemplateOverhead,
)

# Outside this band a ratio is not text (binary-ish noise, or a count that went wrong).
_MIN_CHARS_PER_TOKEN, _MAX_CHARS_PER_TOKEN = 0.5, 16.0
# Prompts this small are mostly template overhead: their ratio says little about the text.
_MIN_LEARN_CHARS, _MIN_LEARN_TOKENS = 64, 16
# Truncation keeps at least about half the window (token-level) or drops whole messages until the rest
# fits (message-level, usually far more than this share): an estimated count that came back below this
# share of num_ctx was not cut, the estimate was high.
_TRUNCATION_ZONE = 0.4
_DEFAULT_OVERHEAD = TemplateOverhead()
_HEURISTIC = CharEstimate(DEFAULT_CHARS_PER_TOKEN, CountMethod.HEURISTIC)


# Plain, not frozen: built on every request, and a frozen dataclass costs four times as much to build.
@dataclass(slots=True)
class Truncation:
    """The verdict of comparing what was sent with what Ollama evaluated; true when truncated.
    `estimate_was_high` holds the method and window of an estimate that came back short but could not
    have been cut (see `judge_truncation`); `description` is written when read."""

    truncated: bool
    sent_tokens: int
    evaluated_tokens: int
    estimate_was_high: tuple[CountMethod, int] | None = None

    def __bool__(self) -> bool:
        return self.truncated

    @property
    def description(self) -> str:
        sent, evaluated = self.sent_tokens, self.evaluated_tokens
        if self.estimate_was_high is not None:
            method, num_ctx = self.estimate_was_high
            return (f"Ollama evaluated {evaluated} of about {sent} prompt tokens: the {method.value} estimate was "
                    f"high (the {num_ctx} window was far from full)")
        share = evaluated / sent if sent else 1.0
        text = f"Ollama evaluated {evaluated} of about {sent} prompt tokens ({share:.0%})"
        return text + ": the prompt was probably truncated" if self.truncated else text


def detect_truncation(sent_tokens: int, prompt_eval_count: int, ratio: float) -> Truncation:
    """Truncated when Ollama evaluated fewer than `ratio` (config `truncation_ratio`) of the tokens sent.

    Meaningful for exact counts; an estimate can be off by more than `1 - ratio` either way.
    """
    return Truncation(sent_tokens > 0 and prompt_eval_count < ratio * sent_tokens, sent_tokens, prompt_eval_count)


def judge_truncation(count: PromptCount, prompt_eval_count: int, num_ctx: int | None,
                     ratio: float) -> Truncation:
    """Whether the request counted as `count` and sent with `num_ctx` was truncated by Ollama.

    An exact count is compared as it is (`detect_truncation`). An estimate can be off by more than
    `1 - ratio` either way (chars/4 above all), so a short answer is taken for truncation only where a
    cut was possible: Ollama evaluated a good share of the window (token-level truncation keeps about
    half of it, dropping old messages usually more), or the estimate itself did not fit the window.
    """
    verdict = detect_truncation(count.tokens, prompt_eval_count, ratio)
    if not verdict.truncated or count.method is CountMethod.EXACT or num_ctx is None:
        return verdict
    if count.tokens >= num_ctx or prompt_eval_count >= _TRUNCATION_ZONE * num_ctx:
        return verdict
    return Truncation(False, count.tokens, prompt_eval_count, (count.method, num_ctx))


# Plain, not frozen: built on every request, and a frozen dataclass costs four times as much to build.
@dataclass(slots=True)
class Observation:
    """Whether an observation was learned from, and why not when it was not (for DEBUG logs):
    `reason` is `why`, with `value` put in when it has a place for one (written when read)."""

    accepted: bool
    why: str
    value: float | None = None

    @property
    def reason(self) -> str:
        return self.why if self.value is None else self.why.format(self.value)


@dataclass(slots=True)
class _ModelStats:
    # What `counting` hands out, built when the numbers change rather than per request.
    counting: tuple[CharEstimate, TemplateOverhead]
    chars: float = 0.0
    tokens: float = 0.0
    per_message: float | None = None


class Calibrator:
    """Per-model learned ratios, fed by responses and read when sizing the next request.

    The characters-per-token ratio is a ratio of exponentially decayed sums, so big prompts weigh more
    than small ones (their ratio is more reliable) and the model's recent traffic more than old traffic.
    """

    def __init__(self, *, truncation_ratio: float = 0.9, decay: float = 0.9, overhead_alpha: float = 0.3,
                 default_overhead: TemplateOverhead = _DEFAULT_OVERHEAD, max_models: int = 512) -> None:
        self._truncation_ratio = truncation_ratio
        self._decay = decay
        self._overhead_alpha = overhead_alpha
        self._default_overhead = default_overhead
        self._max_models = max_models
        self._models: OrderedDict[str, _ModelStats] = OrderedDict()
        self._unlearned = (_HEURISTIC, default_overhead)

    def counting(self, model: str) -> tuple[CharEstimate, TemplateOverhead]:
        """`estimate` and `overhead` in one look-up, as each request's count needs them."""
        stats = self._models.get(model)
        return self._unlearned if stats is None else stats.counting

    def estimate(self, model: str) -> CharEstimate:
        """The characters-per-token estimate for `model`: learned, or characters/4 before any data."""
        return self.counting(model)[0]

    def overhead(self, model: str) -> TemplateOverhead:
        """The template overhead for `model`: learned from exact counts, or the default."""
        return self.counting(model)[1]

    def observe(self, model: str, count: PromptCount, prompt_eval_count: int,
                num_ctx: int | None = None, truncation: Truncation | None = None) -> Observation:
        """Learn from one response: `count` is what the proxy counted for the request that was sent
        with `num_ctx`, `prompt_eval_count` what Ollama reported on the final response line;
        `truncation` the caller's `judge_truncation` of the same, so it is judged once."""
        if prompt_eval_count <= 0:
            return Observation(False, "no prompt_eval_count")
        if count.image_tokens:
            # Image cost is Ollama's heuristic, not what the projector really produced.
            return Observation(False, "images make the count approximate")
        if truncation is None:
            truncation = judge_truncation(count, prompt_eval_count, num_ctx, self._truncation_ratio)
        if count.method is CountMethod.EXACT:
            # An exact count is judged as `detect_truncation` would.
            if truncation.truncated:
                return Observation(False, "looks truncated")
            return self._observe_overhead(model, count, prompt_eval_count)
        if truncation.truncated:
            return Observation(False, "may be truncated")
        return self._observe_ratio(model, count, prompt_eval_count)

    def _observe_overhead(self, model: str, count: PromptCount, prompt_eval_count: int) -> Observation:
        if count.messages == 0:
            return Observation(False, "no messages to attribute overhead to")
        overhead = prompt_eval_count - count.text_tokens - self._default_overhead.fixed
        sample = max(0.0, overhead / count.messages)
        stats = self._stats(model)
        stats.per_message = sample if stats.per_message is None else (
            (1 - self._overhead_alpha) * stats.per_message + self._overhead_alpha * sample)
        stats.counting = (stats.counting[0], TemplateOverhead(stats.per_message, self._default_overhead.fixed))
        return Observation(True, "template overhead {:.1f} tokens per message", sample)

    def _observe_ratio(self, model: str, count: PromptCount, prompt_eval_count: int) -> Observation:
        text_tokens = prompt_eval_count - count.overhead_tokens
        if count.chars < _MIN_LEARN_CHARS or text_tokens < _MIN_LEARN_TOKENS:
            return Observation(False, "too small to learn from")
        ratio = count.chars / text_tokens
        if not _MIN_CHARS_PER_TOKEN <= ratio <= _MAX_CHARS_PER_TOKEN:
            return Observation(False, "implausible ratio {:.2f} characters per token", ratio)
        stats = self._stats(model)
        stats.chars = self._decay * stats.chars + count.chars
        stats.tokens = self._decay * stats.tokens + text_tokens
        stats.counting = (CharEstimate(stats.chars / stats.tokens, CountMethod.CALIBRATED), stats.counting[1])
        return Observation(True, "{:.2f} characters per token", ratio)

    def _stats(self, model: str) -> _ModelStats:
        stats = self._models.get(model)
        if stats is None:
            stats = self._models[model] = _ModelStats(self._unlearned)
            while len(self._models) > self._max_models:
                self._models.popitem(last=False)
        self._models.move_to_end(model)
        return stats
