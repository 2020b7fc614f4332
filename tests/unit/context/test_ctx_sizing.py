"""choose_num_ctx, parse_size_route and reply_tokens: the sizing rules, edge by edge."""

from __future__ import annotations

from typing import Any

import pytest

from ollama_proxy.config.schema import ContextConfig
from ollama_proxy.core.context import CountMethod, SizeReason, SizingPolicy, choose_num_ctx, reply_tokens

# Overhead 100 + margin 200 + reply 0: required = input + 300. Sizes up to 32K, so "largest" is near.
POLICY = ContextConfig(sizes=(2048, 4096, 8192, 16384, 32768), system_overhead_tokens=100,
                       safety_margin_tokens=200, default_reply_tokens=1024)


@pytest.mark.parametrize(("input_tokens", "model_max", "loaded", "num_ctx", "reason", "exceeds"), [
    pytest.param(4096 - 300, None, None, 4096, SizeReason.FITS_BUCKET, False, id="exactly-fits"),
    pytest.param(4096 - 299, None, None, 8192, SizeReason.FITS_BUCKET, False, id="one-over"),
    pytest.param(10, None, None, 2048, SizeReason.FITS_BUCKET, False, id="tiny"),
    pytest.param(40_000, None, None, 32768, SizeReason.EXCEEDS_LARGEST, True, id="exceeds-largest"),
    pytest.param(5000, 4096, None, 4096, SizeReason.CLAMPED, True, id="clamped-and-too-big"),
    pytest.param(3000, 3500, None, 3500, SizeReason.CLAMPED, False, id="clamped-still-fits"),
    pytest.param(40_000, 8192, None, 8192, SizeReason.CLAMPED, True, id="clamp-beats-largest"),
    pytest.param(1000, None, 16384, 16384, SizeReason.REUSED_LOADED, False, id="reuse-bigger-loaded"),
    pytest.param(1000, None, 3000, 3000, SizeReason.REUSED_LOADED, False, id="reuse-off-bucket-value"),
    pytest.param(4096 - 300, None, 4096, 4096, SizeReason.REUSED_LOADED, False, id="reuse-exact-fit"),
    pytest.param(4096 - 299, None, 4096, 8192, SizeReason.GROWN, False, id="grow-one-over"),
    pytest.param(20_000, None, 8192, 32768, SizeReason.GROWN, False, id="grow-several-buckets"),
    pytest.param(50_000, None, 65536, 65536, SizeReason.REUSED_LOADED, False, id="loaded-above-largest"),
    pytest.param(90_000, None, 65536, 65536, SizeReason.REUSED_LOADED, True, id="never-shrink-even-if-short"),
    pytest.param(40_000, None, 8192, 32768, SizeReason.EXCEEDS_LARGEST, True, id="grow-to-largest"),
])
# The service decides with a plain copy of the settings: it must decide as the settings do.
@pytest.mark.parametrize("policy", [POLICY, SizingPolicy.of(POLICY)], ids=["settings", "copy"])
def test_choose(input_tokens: int, model_max: int | None, loaded: int | None, num_ctx: int,
                reason: SizeReason, exceeds: bool, policy: ContextConfig | SizingPolicy) -> None:
    decision = choose_num_ctx(policy, input_tokens=input_tokens, reply=0, count_method=CountMethod.EXACT,
                              model_max=model_max, loaded_context=loaded)
    assert (decision.num_ctx, decision.reason, decision.exceeds_largest) == (num_ctx, reason, exceeds)
    assert decision.required == input_tokens + 300
    assert decision.reloads == (loaded is not None and loaded != num_ctx)
    assert str(decision.required) in decision.detail


def test_small_requests_after_a_big_one_never_reload() -> None:
    loaded: int | None = None
    chosen = []
    for tokens in [500, 6000, 100, 3000, 7000, 200, 20_000, 50]:
        decision = choose_num_ctx(POLICY, input_tokens=tokens, reply=None, count_method=CountMethod.EXACT,
                                  loaded_context=loaded)
        chosen.append((decision.num_ctx, decision.reloads))
        loaded = decision.num_ctx
    assert chosen == [(2048, False), (8192, True), (8192, False), (8192, False), (16384, True),
                      (16384, False), (32768, True), (32768, False)]


def test_default_reply_budget_when_none() -> None:
    decision = choose_num_ctx(POLICY, input_tokens=1000, reply=None, count_method=CountMethod.HEURISTIC)
    assert decision.required == 1000 + 1024 + 300
    assert decision.count_method is CountMethod.HEURISTIC


def test_forced_size_wins_over_everything() -> None:
    decision = choose_num_ctx(POLICY, input_tokens=9000, reply=0, count_method=CountMethod.EXACT,
                              model_max=131072, loaded_context=32768, forced_size=4096)
    assert decision.num_ctx == 4096
    assert decision.reason is SizeReason.FIXED_ROUTE
    assert decision.exceeds_largest
    assert decision.reloads


def test_headers_explain_and_warn() -> None:
    decision = choose_num_ctx(POLICY, input_tokens=40_000, reply=0, count_method=CountMethod.CALIBRATED)
    headers = decision.headers()
    assert headers["X-Proxy-Context-Size"] == "32768"
    assert headers["X-Proxy-Context-Input-Tokens"] == "40000"
    assert headers["X-Proxy-Context-Reason"] == "exceeds-largest"
    assert headers["X-Proxy-Context-Count-Method"] == "calibrated"
    assert headers["X-Proxy-Context-Warning"] == "Request may exceed largest available context!"
    small = choose_num_ctx(POLICY, input_tokens=10, reply=0, count_method=CountMethod.EXACT).headers()
    assert "X-Proxy-Context-Warning" not in small




@pytest.mark.parametrize(("body", "expected"), [
    pytest.param({}, None, id="absent"),
    pytest.param({"options": {"num_predict": 256}}, 256, id="num-predict"),
    pytest.param({"options": {"num_predict": -1}}, None, id="until-done"),
    pytest.param({"options": {"num_predict": -2}}, None, id="fill-context"),
    pytest.param({"options": {"num_predict": 0}}, 0, id="zero"),
    pytest.param({"max_tokens": 300}, 300, id="openai-max-tokens"),
    pytest.param({"max_completion_tokens": 400, "max_tokens": 300}, 400, id="completion-tokens-first"),
    pytest.param({"max_tokens": True}, None, id="bool-is-not-a-number"),
    pytest.param({"options": None, "max_tokens": 12}, 12, id="null-options"),
])
def test_reply_tokens(body: dict[str, Any], expected: int | None) -> None:
    assert reply_tokens(body) == expected


def test_default_sizes_reach_agent_contexts_but_not_past_the_model() -> None:
    default = ContextConfig()
    decision = choose_num_ctx(default, input_tokens=70_000, reply=0, count_method=CountMethod.EXACT)
    assert decision.num_ctx == 131072 and not decision.exceeds_largest
    clamped = choose_num_ctx(default, input_tokens=70_000, reply=0, count_method=CountMethod.EXACT,
                             model_max=40_960)
    assert (clamped.num_ctx, clamped.reason) == (40_960, SizeReason.CLAMPED)
