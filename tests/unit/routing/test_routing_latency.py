"""Learned latency: what counts as a sample, moving averages per backend, model and kind, load times,
and the estimate selection uses."""

from __future__ import annotations

import pytest

from ollama_proxy.core.admission import Priority
from ollama_proxy.core.operations import Operation
from ollama_proxy.core.routing.latency import (
    DEFAULT_LOAD_MS,
    DEFAULT_REPLY_TOKENS,
    LatencyBook,
    estimate_latency_ms,
    expected_reply_tokens,
    operation_kind,
    sample_kind,
    updated,
)
from ollama_proxy.core.routing.state import BackendView, LatencyStats, SampleKind


def test_first_observation_is_taken_as_is() -> None:
    assert updated(None, ttft_ms=200, total_ms=1000, tokens_per_s=40) == LatencyStats(200, 40, 1000, 1)


def test_ewma_moves_a_fraction_towards_each_sample() -> None:
    stats = updated(None, ttft_ms=100, total_ms=1000, tokens_per_s=None)
    stats = updated(stats, ttft_ms=200, total_ms=2000, tokens_per_s=50, alpha=0.5)
    assert stats == LatencyStats(ttft_ms=150, tokens_per_s=50, service_ms=1500, samples=2)
    stats = updated(stats, ttft_ms=150, total_ms=1500, tokens_per_s=30, alpha=0.5)
    assert stats.tokens_per_s == 40


def test_ewma_converges_on_a_new_level() -> None:
    stats = updated(None, ttft_ms=1000, total_ms=1000)
    for _ in range(30):
        stats = updated(stats, ttft_ms=100, total_ms=100)
    assert stats.ttft_ms == pytest.approx(100, abs=1)


def test_negative_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        updated(None, ttft_ms=-1, total_ms=10)


def test_book_keys_by_backend_and_normalised_model() -> None:
    book = LatencyBook(alpha=0.5)
    book.observe("gpu", "Llama3", ttft_ms=100, total_ms=400)
    book.observe("gpu", "llama3:latest", ttft_ms=300, total_ms=800, tokens_per_s=20)
    book.observe("npu", "llama3", ttft_ms=900, total_ms=5000)
    assert book.get("gpu", "llama3") == LatencyStats(200, 20, 600, 2)
    assert set(book.for_backend("gpu")) == {"llama3:latest"}
    assert book.get("npu", "llama3").ttft_ms == 900
    book.forget("gpu")
    assert book.get("gpu", "llama3") is None


def test_cold_load_time_is_taken_out_and_learned_apart() -> None:
    book = LatencyBook()
    stats = book.observe("gpu", "m", ttft_ms=4100, total_ms=5000, load_ms=4000)
    assert stats is not None and (stats.ttft_ms, stats.service_ms) == (100, 1000)
    assert book.load_ms("gpu", "m:latest") == 4000


def test_a_load_longer_than_the_wall_clock_teaches_only_the_load() -> None:
    # A sped-up simulator reports modelled durations on another clock than the proxy's.
    book = LatencyBook()
    assert book.observe("gpu", "m", ttft_ms=30, total_ms=90, load_ms=400) is None
    assert book.get("gpu", "m") is None and book.load_ms("gpu", "m") == 400


def test_a_warm_runner_hand_out_is_not_a_load() -> None:
    book = LatencyBook()
    stats = book.observe("gpu", "m", ttft_ms=100, total_ms=500, load_ms=5)
    assert stats is not None and stats.ttft_ms == 100 and book.load_ms("gpu", "m") is None


@pytest.mark.parametrize(("operation", "body", "final", "expected"), [
    pytest.param(Operation.GENERATE, {"model": "m"}, {"done_reason": "load"}, None, id="ollama-run-preload"),
    pytest.param(Operation.GENERATE, {"model": "m", "prompt": ""}, {}, None, id="empty-prompt"),
    pytest.param(Operation.CHAT, {"model": "m", "messages": []}, {"done_reason": "load"}, None, id="empty-messages"),
    pytest.param(Operation.CHAT, {"model": "m", "messages": [], "keep_alive": 0}, {"done_reason": "unload"}, None,
                 id="ollama-stop-unload"),
    pytest.param(Operation.GENERATE, {"model": "m", "keep_alive": 0}, None, None, id="unload-without-final"),
    pytest.param(Operation.GENERATE, {"model": "m", "prompt": "hi"}, {"done_reason": "unload"}, None,
                 id="done-reason-says-unload"),
    pytest.param(Operation.CHAT, {"messages": [{"role": "user", "content": "hi"}]}, {"done_reason": "stop"},
                 SampleKind.GENERATION, id="chat"),
    pytest.param(Operation.GENERATE, {"prompt": "hi", "keep_alive": 0}, {"done_reason": "stop"},
                 SampleKind.GENERATION, id="answered-then-unloaded-is-real-work"),
    pytest.param(Operation.COMPLETION, {"prompt": "hi"}, {}, SampleKind.GENERATION, id="openai-completion"),
    pytest.param(Operation.EMBED, {"input": "hi"}, {}, SampleKind.EMBEDDING, id="embed"),
    pytest.param(Operation.EMBEDDINGS, {"prompt": "hi"}, {}, SampleKind.EMBEDDING, id="legacy-embeddings"),
    pytest.param(Operation.PULL, {"model": "m"}, {"status": "success"}, None, id="management"),
    pytest.param(Operation.SHOW, {"model": "m"}, {}, None, id="show"),
])
def test_only_real_inference_is_a_sample(operation: Operation, body: dict[str, object],
                                         final: dict[str, object] | None, expected: SampleKind | None) -> None:
    assert sample_kind(operation, body, final) == expected


def test_embeddings_are_learned_apart_from_generation() -> None:
    book = LatencyBook()
    book.observe("gpu", "m", ttft_ms=900, total_ms=3000)
    book.observe("gpu", "m", ttft_ms=5, total_ms=5, kind=SampleKind.EMBEDDING)
    assert book.get("gpu", "m").ttft_ms == 900  # type: ignore[union-attr]
    assert book.get("gpu", "m", SampleKind.EMBEDDING).ttft_ms == 5  # type: ignore[union-attr]
    assert book.for_backend("gpu")["m:latest"].ttft_ms == 900
    assert book.for_backend("gpu", SampleKind.EMBEDDING)["m:latest"].ttft_ms == 5
    assert book.column(["gpu"], "m:latest")[0].ttft_ms == 900  # type: ignore[union-attr]
    assert book.column(["gpu"], "m:latest", SampleKind.EMBEDDING)[0].ttft_ms == 5  # type: ignore[union-attr]
    # Neither kind stands in for the other: a model only ever embedded has no chat estimate yet.
    book.observe("gpu", "nomic", ttft_ms=7, total_ms=7, kind=SampleKind.EMBEDDING)
    assert book.column(["gpu"], "nomic:latest") == [None]
    book.observe("gpu", "chatty", ttft_ms=300, total_ms=900)
    assert book.column(["gpu"], "chatty:latest", SampleKind.EMBEDDING) == [None]


@pytest.mark.parametrize(("operation", "kind"), [
    (Operation.CHAT, SampleKind.GENERATION), (Operation.GENERATE, SampleKind.GENERATION),
    (Operation.COMPLETION, SampleKind.GENERATION), (Operation.EMBED, SampleKind.EMBEDDING),
    (Operation.EMBEDDINGS, SampleKind.EMBEDDING),
])
def test_a_call_is_estimated_by_its_own_kind_of_work(operation: Operation, kind: SampleKind) -> None:
    assert operation_kind(operation) is kind


def test_the_typical_reply_length_is_learned_per_model_from_generations_only() -> None:
    book = LatencyBook(alpha=0.5)
    assert book.typical_reply_tokens("m:latest") is None
    book.observe("gpu", "m", ttft_ms=100, total_ms=900, tokens_per_s=40, reply_tokens=100)
    book.observe("npu", "M:latest", ttft_ms=300, total_ms=3000, tokens_per_s=10, reply_tokens=300)
    book.observe("gpu", "m", ttft_ms=5, total_ms=5, kind=SampleKind.EMBEDDING, reply_tokens=9999)
    assert book.typical_reply_tokens("m:latest") == 200


@pytest.mark.parametrize(("asked", "typical", "expected"), [
    pytest.param(None, None, DEFAULT_REPLY_TOKENS, id="nothing-known-the-default"),
    pytest.param(None, 42.5, 42.5, id="the-models-typical-length"),
    pytest.param(512, 42.5, 512, id="the-request-says"),
    pytest.param(0, 42.5, 0, id="asked-for-none"),
])
def test_the_expected_reply_length(asked: int | None, typical: float | None, expected: float) -> None:
    assert expected_reply_tokens(asked, typical) == expected


@pytest.mark.parametrize(("kind", "reply_tokens", "expected"), [
    pytest.param(SampleKind.GENERATION, 100, 200 + 100 * 1000 / 50, id="generation-time-at-the-learned-speed"),
    pytest.param(SampleKind.GENERATION, 0, 200, id="no-reply-no-generation-time"),
    pytest.param(SampleKind.EMBEDDING, 100, 20, id="an-embedding-has-no-reply"),
])
def test_the_estimate_includes_generating_the_expected_reply(kind: SampleKind, reply_tokens: int,
                                                             expected: float) -> None:
    view = BackendView("gpu", latency={"m": LatencyStats(200, 50.0, 900, 3)},
                       embedding_latency={"m": LatencyStats(20, None, 20, 3)}, loaded={"m": None})
    assert estimate_latency_ms(view, "m:latest", kind=kind, reply_tokens=reply_tokens) == pytest.approx(expected)


def test_no_generation_time_is_charged_where_the_speed_was_not_learned() -> None:
    view = BackendView("gpu", avg_latency_ms=400, latency={"m": LatencyStats(200, None, 900, 3)}, loaded={"m": None})
    assert estimate_latency_ms(view, "m:latest", reply_tokens=1000) == 200
    assert estimate_latency_ms(view, "unseen:latest", reply_tokens=1000) == 400 + DEFAULT_LOAD_MS


def test_learned_view_feeds_the_estimate() -> None:
    book = LatencyBook()
    book.observe("gpu", "m", ttft_ms=250, total_ms=900)
    view = BackendView("gpu", avg_latency_ms=100, latency=book.for_backend("gpu"), loaded={"m": None, "other": None})
    assert estimate_latency_ms(view, "m:latest") == 250
    assert estimate_latency_ms(view, "other:latest") == 100
    assert estimate_latency_ms(view, None) == 100


@pytest.mark.parametrize(("loaded", "load_ms", "context_tokens", "expected"), [
    pytest.param({"m": 8192}, {}, 4096, 250, id="resident-and-fits"),
    pytest.param({}, {}, None, 250 + DEFAULT_LOAD_MS, id="cold-default-load"),
    pytest.param({}, {"m": 400}, None, 650, id="cold-learned-load"),
    pytest.param({"m": 2048}, {"m": 400}, 8192, 650, id="resident-too-small-reloads"),
])
def test_the_load_is_charged_where_the_model_is_not_ready(loaded: dict[str, int], load_ms: dict[str, float],
                                                          context_tokens: int | None, expected: float) -> None:
    stats = {"m": LatencyStats(ttft_ms=250, tokens_per_s=None, service_ms=900, samples=3)}
    view = BackendView("gpu", latency=stats, loaded=loaded, load_ms=load_ms)
    assert estimate_latency_ms(view, "m:latest", context_tokens=context_tokens) == expected


@pytest.mark.parametrize(("in_flight", "queued", "priority", "expected"), [
    pytest.param(0, (0, 0, 0, 0), Priority.NORMAL, 200, id="idle"),
    pytest.param(1, (0, 0, 0, 0), Priority.NORMAL, 200, id="free-slot-left"),
    pytest.param(2, (0, 0, 0, 0), Priority.NORMAL, 200 + 1 / 2 * 1000, id="full-wait-one-completion"),
    pytest.param(2, (0, 3, 0, 0), Priority.NORMAL, 200 + 4 / 2 * 1000, id="behind-three-normal"),
    pytest.param(2, (0, 3, 0, 0), Priority.HIGH, 200 + 1 / 2 * 1000, id="high-jumps-normal-queue"),
    pytest.param(2, (5, 3, 1, 1), Priority.CRITICAL, 200 + 2 / 2 * 1000, id="critical-only-behind-critical"),
])
def test_queue_wait_in_the_estimate(in_flight: int, queued: tuple[int, int, int, int], priority: Priority,
                                    expected: float) -> None:
    stats = {"m": LatencyStats(ttft_ms=200, tokens_per_s=None, service_ms=1000, samples=3)}
    view = BackendView("b", max_concurrent=2, in_flight=in_flight, queued=queued, latency=stats, loaded={"m": None})
    assert estimate_latency_ms(view, "m:latest", priority) == pytest.approx(expected)
