"""Calibrator and detect_truncation: learning from prompt_eval_count without learning from truncations."""

from __future__ import annotations

import random

import pytest

from ollama_proxy.core.context import (
    CachedCounter,
    Calibrator,
    CountMethod,
    TemplateOverhead,
    Truncation,
    count_prompt,
    detect_truncation,
    prompt_parts,
)


def _chat(chars: int, messages: int = 2) -> dict[str, object]:
    per = chars // messages
    return {"messages": [{"role": "user", "content": "x" * per} for _ in range(messages)]}


@pytest.mark.parametrize(("sent", "evaluated", "truncated"), [
    pytest.param(1000, 1000, False, id="all"),
    pytest.param(1000, 901, False, id="just-above-ratio"),
    pytest.param(1000, 899, True, id="just-below-ratio"),
    pytest.param(8000, 2050, True, id="cut-to-half-window"),
    pytest.param(1000, 1100, False, id="more-than-counted"),
    pytest.param(0, 0, False, id="nothing-sent"),
])
def test_detect_truncation(sent: int, evaluated: int, truncated: bool) -> None:
    verdict = detect_truncation(sent, evaluated, 0.9)
    assert bool(verdict) is truncated
    assert str(evaluated) in verdict.description
    assert ("truncated" in verdict.description) is truncated


def test_starts_at_chars_per_four() -> None:
    estimate = Calibrator().estimate("m")
    assert (estimate.chars_per_token, estimate.method) == (4.0, CountMethod.HEURISTIC)


def test_ratio_converges_to_the_models_own() -> None:
    calibrator = Calibrator()
    rng = random.Random(7)
    true_ratio = 3.1
    for _ in range(40):
        parts = prompt_parts(_chat(rng.randint(500, 20_000)))
        count = count_prompt(parts, estimate=calibrator.estimate("m"), overhead=calibrator.overhead("m"))
        evaluated = round(count.chars / true_ratio * rng.uniform(0.95, 1.05)) + count.overhead_tokens
        assert calibrator.observe("m", count, evaluated, num_ctx=32768).accepted
    estimate = calibrator.estimate("m")
    assert estimate.method is CountMethod.CALIBRATED
    assert estimate.chars_per_token == pytest.approx(true_ratio, rel=0.03)
    assert calibrator.estimate("other").method is CountMethod.HEURISTIC


def test_truncated_responses_are_not_learned() -> None:
    calibrator = Calibrator()
    count = count_prompt(prompt_parts(_chat(40_000)))  # about 10k tokens by chars/4
    # Ollama cut it to about half of a 4096 window.
    observation = calibrator.observe("m", count, 2100, num_ctx=4096)
    assert not observation.accepted
    assert "truncated" in observation.reason
    assert calibrator.estimate("m").method is CountMethod.HEURISTIC


def test_a_verdict_given_by_the_caller_is_not_judged_again() -> None:
    """The service judges truncation once per answer and hands the verdict over: the calibrator
    follows it even where its own judgement (with its own ratio) would differ."""
    count = count_prompt(prompt_parts(_chat(8000)))  # ~2000 tokens by chars/4
    calibrator = Calibrator()
    cut = Truncation(True, count.tokens, 1900)
    assert not calibrator.observe("m", count, 1900, num_ctx=4096, truncation=cut).accepted
    assert calibrator.estimate("m").method is CountMethod.HEURISTIC
    assert calibrator.observe("m", count, 1900, num_ctx=4096).accepted


def test_dense_text_far_below_the_window_is_learned() -> None:
    """Fewer tokens than chars/4 predicts is not truncation when the window was nowhere near full."""
    calibrator = Calibrator()
    count = count_prompt(prompt_parts(_chat(8000)))  # ~2000 tokens by chars/4
    assert calibrator.observe("m", count, 1200, num_ctx=32768).accepted
    assert calibrator.estimate("m").chars_per_token > 4.0


@pytest.mark.parametrize(("chars", "evaluated", "reason"), [
    pytest.param(40, 20, "too small", id="tiny"),
    pytest.param(4000, 9000, "implausible", id="many-more-tokens-than-chars"),
    pytest.param(4000, 0, "no prompt_eval_count", id="missing"),
])
def test_unlearnable_observations(chars: int, evaluated: int, reason: str) -> None:
    calibrator = Calibrator()
    observation = calibrator.observe("m", count_prompt(prompt_parts(_chat(chars))), evaluated, num_ctx=32768)
    assert not observation.accepted
    assert reason in observation.reason


def test_images_are_not_learned_from() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 999, "images": ["i"]}]}
    count = count_prompt(prompt_parts(body))
    assert not Calibrator().observe("m", count, 1000, num_ctx=32768).accepted


def test_template_overhead_learned_from_exact_counts() -> None:
    calibrator = Calibrator(default_overhead=TemplateOverhead(per_message=5, fixed=6))
    counter = CachedCounter(lambda texts: [len(t.split()) for t in texts])
    for turns in range(2, 12):
        body = {"messages": [{"role": "user", "content": "word " * 50}] * turns}
        count = count_prompt(prompt_parts(body), exact=counter, overhead=calibrator.overhead("m"))
        # The real template costs 8 tokens per message plus the fixed 6.
        assert calibrator.observe("m", count, 50 * turns + 8 * turns + 6).accepted
    assert calibrator.overhead("m").per_message == pytest.approx(8.0)
    assert calibrator.overhead("unseen").per_message == 5


def test_exact_count_far_above_evaluated_is_truncation_not_overhead() -> None:
    calibrator = Calibrator()
    count = count_prompt(prompt_parts(_chat(100)), exact=CachedCounter(lambda t: [1000] * len(t)))
    assert calibrator.observe("m", count, 1000).reason == "looks truncated"
    assert calibrator.overhead("m") == TemplateOverhead()


def test_model_table_is_bounded() -> None:
    calibrator = Calibrator(max_models=2)
    count = count_prompt(prompt_parts(_chat(4000)))
    for model in ["a", "b", "c"]:
        calibrator.observe(model, count, 1000, num_ctx=32768)
    assert calibrator.estimate("a").method is CountMethod.HEURISTIC
    assert calibrator.estimate("c").method is CountMethod.CALIBRATED
