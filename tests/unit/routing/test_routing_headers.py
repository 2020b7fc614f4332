"""Routing headers in (parsing, refusals) and out (rendering a decision)."""

from __future__ import annotations

import random
from dataclasses import fields, replace

import pytest

from ollama_proxy.core.admission import Priority
from ollama_proxy.core.routing.headers import decision_headers, parse_route_headers
from ollama_proxy.core.routing.select import select_backend
from ollama_proxy.core.routing.state import BackendView, RouteRequest, SampleKind
from ollama_proxy.errors import BadRequest


def test_no_headers_gives_the_defaults() -> None:
    assert parse_route_headers({}, model="qwen3:4b", context_tokens=8192) == RouteRequest(
        model="qwen3:4b", context_tokens=8192)


def test_every_header_is_read_case_insensitively() -> None:
    request = parse_route_headers({
        "x-target-backend": " gpu-1 ", "X-LATENCY-CRITICAL": "yes", "X-Power-Efficient": "0",
        "X-Max-Latency-Ms": "250", "X-Max-Power-Watts": "12.5", "X-Priority": "critical",
        "X-Media-Type": "Image/PNG; q=1",
    })
    assert request == RouteRequest(target="gpu-1", latency_critical=True, power_efficient=False,
                                   max_latency_ms=250, max_power_watts=12.5, priority=Priority.CRITICAL,
                                   media_type="image")


@pytest.mark.parametrize(("value", "expected"), [
    pytest.param("0", Priority.BEST_EFFORT, id="number-0"),
    pytest.param("3", Priority.CRITICAL, id="number-3"),
    pytest.param("best-effort", Priority.BEST_EFFORT, id="name-best-effort"),
    pytest.param("BEST_EFFORT", Priority.BEST_EFFORT, id="underscore-upper"),
    pytest.param("High", Priority.HIGH, id="name-mixed-case"),
    pytest.param("", Priority.NORMAL, id="empty-default"),
])
def test_priority_names_and_numbers(value: str, expected: Priority) -> None:
    assert parse_route_headers({"X-Priority": value}).priority is expected


@pytest.mark.parametrize(("headers", "message"), [
    pytest.param({"X-Priority": "4"}, r"X-Priority: unknown priority '4'; allowed: best-effort \(0\)",
                 id="priority-out-of-range"),
    pytest.param({"X-Priority": "urgent"}, "X-Priority: unknown priority", id="priority-unknown-name"),
    pytest.param({"X-Latency-Critical": "maybe"}, "X-Latency-Critical: expected true/false",
                 id="bad-bool"),
    pytest.param({"X-Max-Latency-Ms": "fast"}, "X-Max-Latency-Ms: expected a positive number, got 'fast'",
                 id="not-a-number"),
    pytest.param({"X-Max-Power-Watts": "-5"}, "X-Max-Power-Watts: expected a positive number",
                 id="negative"),
    pytest.param({"X-Max-Power-Watts": "nan"}, "X-Max-Power-Watts: expected a positive number",
                 id="nan"),
    pytest.param({"X-Max-Latency-Ms": "inf"}, "X-Max-Latency-Ms: expected a positive number", id="inf"),
    pytest.param({"X-Media-Type": "im age"}, "X-Media-Type: expected a media kind", id="bad-media"),
])
def test_bad_values_are_refused_with_400(headers: dict[str, str], message: str) -> None:
    with pytest.raises(BadRequest, match=message) as info:
        parse_route_headers(headers)
    assert info.value.status == 400
    assert isinstance(info.value, ValueError)


def test_decision_renders_into_response_headers() -> None:
    backends = [BackendView("fast", avg_latency_ms=120.4, power_watts=55),
                BackendView("slow", avg_latency_ms=1500, power_watts=28),
                BackendView("mid", avg_latency_ms=400, power_watts=12)]
    request = parse_route_headers({"X-Latency-Critical": "true"})
    headers = decision_headers(select_backend(request, backends, rng=random.Random(0)))
    assert headers == {
        "X-Backend-Used": "fast",
        "X-Estimated-Latency-Ms": "120",
        "X-Estimated-Power-W": "55.0",
        "X-Routing-Reason": "latency-critical; fast est. 120 ms vs mid 400 ms",
        "X-Alternatives": "mid,slow",
    }


def test_asked_keeps_every_header_and_fills_in_the_call() -> None:
    """`asked` builds the request field by field: a field added to RouteRequest and forgotten there fails here."""
    headers = RouteRequest(target="gpu", latency_critical=True, power_efficient=False, max_latency_ms=900.0,
                           max_power_watts=20.0, priority=Priority.HIGH, media_type="audio")
    assert {f.name for f in fields(RouteRequest)} == {
        "target", "latency_critical", "power_efficient", "max_latency_ms", "max_power_watts", "priority", "media_type",
        "model", "context_tokens", "kind", "reply_tokens"}
    asked = headers.asked("Llama3.2", 4096, SampleKind.EMBEDDING, 12)
    assert asked == replace(headers, model="Llama3.2", context_tokens=4096, kind=SampleKind.EMBEDDING, reply_tokens=12)
    assert asked.model == "llama3.2:latest"
