"""An answer's headers, as both HTTP fronts write them: the backend's that may cross the proxy, with the
proxy's own in place of any the backend also sent (llama.cpp sends its own X-Request-ID)."""

from __future__ import annotations

import random

from multidict import CIMultiDict

from ollama_proxy.adapters.http.calls import answer_header_pairs, answer_headers
from ollama_proxy.core.routing.select import select_backend
from ollama_proxy.core.routing.state import BackendView, RouteRequest
from ollama_proxy.service.reply import CallRecord

BACKEND = CIMultiDict([("Content-Type", "application/json"), ("x-request-id", "the-backends-own"),
                       ("Connection", "keep-alive"), ("Content-Length", "12"), ("X-Custom", "a"), ("X-Custom", "b")])


def record() -> CallRecord:
    made = CallRecord()
    made.routing = select_backend(RouteRequest(model="m"), [BackendView("gpu", models=frozenset({"m"}))],
                                  rng=random.Random(0))
    return made


def test_the_proxy_replaces_what_it_also_says_and_drops_hop_by_hop_headers() -> None:
    pairs = answer_header_pairs(BACKEND, "ours", record())
    names = [name.lower() for name, _ in pairs]
    assert ("X-Request-ID", "ours") in pairs and names.count("x-request-id") == 1
    assert "connection" not in names and "content-length" not in names
    assert [v for n, v in pairs if n == "X-Custom"] == ["a", "b"] and ("Content-Type", "application/json") in pairs
    assert ("X-Backend-Used", "gpu") in pairs


def test_both_fronts_send_the_same_headers() -> None:
    for upstream in (BACKEND, None, {}):
        pairs = answer_header_pairs(upstream, "ours", record())
        assert sorted(pairs) == sorted(answer_headers(upstream, "ours", record()).items())
