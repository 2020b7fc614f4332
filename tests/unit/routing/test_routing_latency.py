"""Learned latency: moving averages per backend and model, and the estimate selection uses."""

from __future__ import annotations

import pytest

from ollama_proxy.core.admission import Priority
from ollama_proxy.core.routing.latency import LatencyBook, estimate_latency_ms, updated
from ollama_proxy.core.routing.state import BackendView, LatencyStats


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


def test_cold_load_time_is_taken_out() -> None:
    book = LatencyBook()
    stats = book.observe("gpu", "m", ttft_ms=4100, total_ms=5000, load_ms=4000)
    assert (stats.ttft_ms, stats.service_ms) == (100, 1000)


def test_learned_view_feeds_the_estimate() -> None:
    book = LatencyBook()
    book.observe("gpu", "m", ttft_ms=250, total_ms=900)
    view = BackendView("gpu", avg_latency_ms=100, latency=book.for_backend("gpu"))
    assert estimate_latency_ms(view, "m:latest") == 250
    assert estimate_latency_ms(view, "other:latest") == 100
    assert estimate_latency_ms(view, None) == 100


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
    view = BackendView("b", max_concurrent=2, in_flight=in_flight, queued=queued, latency=stats)
    assert estimate_latency_ms(view, "m:latest", priority) == pytest.approx(expected)
