"""`ollama-proxy status` rendering: pure functions over a status document shaped as `GET /status` answers."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from ollama_proxy.adapters.cli.status_table import MAX_CELL, Cell, render_status, table

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def backend(backend_id: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": backend_id, "enabled": True, "reachable": True, "last_error": None, "models": ["llama3.2:latest"],
        "loaded": [], "characteristics": {"power_watts": 12.0, "max_concurrent": 4}, "breaker": "closed",
        "queue": {"best-effort": 0, "normal": 0, "high": 0, "critical": 0}, "in_flight": 0, "learned_latency": {},
        "thermal": {"level": "cool", "temp_c": None, "reason": "no temperature sensor for this hardware"},
    }
    return base | fields


DOC: dict[str, Any] = {
    "status": "ok", "version": "0.1.0",
    "efficiency": {"mode": "auto", "effective_mode": "efficiency", "reason": "on battery (54%)"},
    "backends": [
        backend("igpu", loaded=[{"model": "llama3.2:latest", "context_length": 4096}],
                learned_latency={"llama3.2:latest": {"ttft_ms": 152.9, "tokens_per_s": 30.0, "samples": 1},
                                 "qwen3:8b": {"ttft_ms": 410.0, "tokens_per_s": None, "samples": 2}},
                in_flight=4, queue={"best-effort": 1, "normal": 0, "high": 2, "critical": 0},
                thermal={"level": "hot", "temp_c": 86.4, "reason": "86 C"}),
        backend("cpu", reachable=False, breaker="open", last_error="connection refused",
                characteristics={"power_watts": 28.5, "max_concurrent": 2}),
        backend("npu", enabled=False),
    ],
    "context": {"sizes": [2048, 4096, 32768], "default_route": "auto", "decisions": 7, "truncations_detected": 1,
                "exact_tokenizers": ["llama3.2:latest"]},
    "recent": [
        {"at": 1796186744.66, "operation": "chat", "model": "llama3.2", "backend": "igpu",
         "routing_reason": "efficiency: lower power (best of 2); 1 excluded", "num_ctx": 4096,
         "sizing_reason": "reused-loaded", "status": 200, "queued_ms": 12.5, "duration_ms": 421.6, "error": None},
        {"at": 1796186744.67, "operation": "generate", "model": "nope", "backend": None, "routing_reason": None,
         "num_ctx": None, "sizing_reason": None, "status": 404, "queued_ms": 0.0, "duration_ms": 0.7,
         "error": "model 'nope:latest' not found on any backend " + "x" * 200},
        {"at": 1796186744.68, "operation": "embed", "model": "nomic-embed-text", "backend": "cpu",
         "routing_reason": "only candidate", "num_ctx": None, "sizing_reason": None, "status": 502,
         "queued_ms": 0.0, "duration_ms": 3.0, "error": "backend 'cpu': connection refused"},
    ],
}


def section(text: str, title: str) -> list[str]:
    """The lines of one section (from its title to the next blank line)."""
    lines = text.splitlines()
    start = lines.index(title) if title in lines else next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start, len(lines)) if not lines[i]), len(lines))
    return lines[start + 1:end]


def row(lines: list[str], first: str) -> list[str]:
    return next(line for line in lines if line.split()[0] == first).split()


def test_summary_says_status_mode_and_why_and_context() -> None:
    text = render_status(DOC, url="http://127.0.0.1:11435", colour=False)
    first, mode, context = text.splitlines()[:3]
    assert first == "ollama-proxy 0.1.0 at http://127.0.0.1:11435: ok"
    assert mode == "mode     auto -> efficiency (on battery (54%))"
    assert context.startswith("context  sizes 2048-32768, bare paths auto; 7 sized, 1 truncations detected")
    assert context.endswith("exact tokenizers: llama3.2:latest")


def test_backends_show_health_breaker_load_queue_power_and_heat() -> None:
    lines = section(render_status(DOC, url="u", colour=False), "BACKENDS")
    assert lines[0].split() == ["ID", "HEALTH", "BREAKER", "IN", "FLIGHT", "QUEUED", "POWER", "THERMAL", "MODELS",
                                "NOTE"]
    igpu = lines[1]
    assert igpu.split()[:4] == ["igpu", "up", "closed", "4/4"]
    assert "3 (high 2, best-effort 1)" in igpu and "12 W" in igpu and "hot 86C" in igpu
    assert row(lines, "cpu")[:4] == ["cpu", "down", "open", "0/2"]
    assert "28.5 W" in lines[2] and lines[2].endswith("connection refused")
    assert row(lines, "npu")[1] == "disabled"
    # Columns line up: every row's HEALTH starts under the header's.
    column = lines[0].index("HEALTH")
    assert all(line[column - 2:column] == "  " and line[column] != " " for line in lines)


def test_models_show_loaded_contexts_and_learned_speed() -> None:
    lines = section(render_status(DOC, url="u", colour=False), "MODELS")
    assert row(lines, "igpu") == ["igpu", "llama3.2:latest", "4096", "152.9", "ms", "30", "tok/s"]
    qwen = next(line for line in lines if "qwen3:8b" in line).split()
    assert qwen == ["igpu", "qwen3:8b", "not", "loaded", "410", "ms", "-"]
    assert not any(line.startswith("cpu") for line in lines)  # nothing loaded, nothing learned


def test_recent_decisions_newest_first_with_num_ctx_reason_status_duration() -> None:
    lines = section(render_status(DOC, url="u", colour=False), "RECENT DECISIONS (newest first)")
    header, chat, missing, embed = lines
    assert header.split() == ["TIME", "REQUEST", "BACKEND", "NUM_CTX", "STATUS", "DURATION", "REASON"]
    assert re.match(r"\d\d:\d\d:\d\d  chat llama3\.2 +igpu +4096 reused-loaded +200 +421\.6 ms \(queued 12\.5 ms\)"
                    r" +efficiency: lower power \(best of 2\); 1 excluded$", chat)
    assert " generate nope " in missing and " 404 " in missing
    reason = missing[header.index("REASON"):]
    assert len(reason) == MAX_CELL and reason.endswith("...")  # a long error is cut, the row stays one line
    assert "502" in embed and embed.endswith("backend 'cpu': connection refused")


def test_recent_limit_and_empty_states() -> None:
    one = render_status(DOC, url="u", colour=False, recent=1)
    assert len(section(one, "RECENT DECISIONS (newest first)")) == 2
    empty = copy.deepcopy(DOC) | {"backends": [], "recent": []}
    text = render_status(empty, url="u", colour=False)
    assert section(text, "BACKENDS") == ["no backends"]
    assert "MODELS" not in text
    assert section(text, "RECENT DECISIONS") == ["no requests yet"]


def test_a_document_from_another_version_still_renders() -> None:
    text = render_status({"backends": [{"id": "a"}], "recent": [{"status": 200}]}, url="u", colour=False)
    assert "ollama-proxy ? at u: unknown" in text
    assert row(section(text, "BACKENDS"), "a")[:2] == ["a", "down"]


@pytest.mark.parametrize("status", ["ok", "degraded", "down"])
def test_colour_only_when_asked_and_it_never_shifts_columns(status: str) -> None:
    doc = DOC | {"status": status}
    plain = render_status(doc, url="u", colour=False)
    coloured = render_status(doc, url="u", colour=True)
    assert "\x1b[" not in plain
    assert ANSI.sub("", coloured) == plain
    expected = {"ok": "\x1b[32mok\x1b[0m", "degraded": "\x1b[33mdegraded\x1b[0m", "down": "\x1b[31mdown\x1b[0m"}
    assert coloured.splitlines()[0].endswith(expected[status])
    assert "\x1b[31mopen\x1b[0m" in coloured and "\x1b[32mup\x1b[0m" in coloured and "\x1b[31m404" not in coloured
    assert "\x1b[33m404\x1b[0m" in coloured and "\x1b[31m502\x1b[0m" in coloured


def test_table_pads_by_visible_width() -> None:
    lines = table(("A", "B"), [[Cell("long-value", "31"), Cell("x")], [Cell("s"), Cell("y")]], colour=True)
    assert [ANSI.sub("", line) for line in lines] == ["A           B", "long-value  x", "s           y"]
