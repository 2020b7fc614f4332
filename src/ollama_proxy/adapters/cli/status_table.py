"""`ollama-proxy status` as text: pure functions from the proxy's status document (`GET /status`,
built by `StatusViews.overview`) to what the terminal shows. No I/O; `status_command` prints.

Fields are read with defaults, so a status command of one version still renders a proxy of another.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# ANSI SGR codes
BOLD, DIM, RED, GREEN, YELLOW = "1", "2", "31", "32", "33"
PRIORITIES = ("critical", "high", "normal", "best-effort")
# A cell longer than this (a routing reason, an error) is cut so rows stay one line each.
MAX_CELL = 72


@dataclass(frozen=True)
class Cell:
    text: str
    style: str = ""


def paint(text: str, style: str, colour: bool) -> str:
    return f"\x1b[{style}m{text}\x1b[0m" if colour and style and text else text


def table(header: Sequence[str], rows: Sequence[Sequence[Cell]], *, colour: bool) -> list[str]:
    """Left-aligned columns two spaces apart; widths from the plain text, so colour never shifts them."""
    cells = [[Cell(h, BOLD) for h in header], *rows]
    widths = [max(len(row[i].text) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        padded = [paint(c.text, c.style, colour) + " " * (w - len(c.text)) for c, w in zip(row, widths, strict=True)]
        lines.append("  ".join(padded).rstrip())
    return lines


def render_status(doc: Mapping[str, Any], *, url: str, colour: bool, recent: int = 10) -> str:
    """The whole screen: a summary, the backends, their models, the newest `recent` decisions."""
    lines = [*summary(doc, url=url, colour=colour), ""]
    backends = list(doc.get("backends", []))
    lines += [paint("BACKENDS", BOLD, colour), *backend_table(backends, colour=colour), ""]
    models = model_rows(backends)
    if models:
        lines += [paint("MODELS", BOLD, colour),
                  *table(("BACKEND", "MODEL", "LOADED NUM_CTX", "FIRST TOKEN", "SPEED"), models, colour=colour), ""]
    decisions = list(doc.get("recent", []))[:recent]
    lines.append(paint("RECENT DECISIONS", BOLD, colour) + (" (newest first)" if decisions else ""))
    lines += decision_table(decisions, colour=colour) if decisions else ["no requests yet"]
    return "\n".join(lines) + "\n"


def summary(doc: Mapping[str, Any], *, url: str, colour: bool) -> list[str]:
    status = str(doc.get("status", "unknown"))
    style = GREEN if status == "ok" else YELLOW if status == "degraded" else RED
    head = f"ollama-proxy {doc.get('version', '?')} at {url}: {paint(status, style, colour)}"
    return [head, mode_line(doc.get("efficiency", {}), colour=colour),
            context_line(doc.get("context", {}))]


def mode_line(efficiency: Mapping[str, Any], *, colour: bool) -> str:
    chosen, effective = efficiency.get("mode", "?"), efficiency.get("effective_mode", "?")
    shown = paint(str(effective), BOLD, colour)
    mode = shown if chosen == effective else f"{chosen} -> {shown}"
    reason = efficiency.get("reason")
    return f"mode     {mode}" + (f" ({reason})" if reason else "")


def context_line(context: Mapping[str, Any]) -> str:
    sizes = list(context.get("sizes", []))
    span = f"{sizes[0]}-{sizes[-1]}" if len(sizes) > 1 else (str(sizes[0]) if sizes else "?")
    exact = ", ".join(context.get("exact_tokenizers", [])) or "none"
    return (f"context  sizes {span}, bare paths {context.get('default_route', '?')}; "
            f"{context.get('decisions', 0)} sized, {context.get('truncations_detected', 0)} truncations detected; "
            f"exact tokenizers: {exact}")


def backend_table(backends: Sequence[Mapping[str, Any]], *, colour: bool) -> list[str]:
    if not backends:
        return ["no backends"]
    header = ("ID", "HEALTH", "BREAKER", "IN FLIGHT", "QUEUED", "POWER", "THERMAL", "MODELS", "NOTE")
    return table(header, [backend_row(b) for b in backends], colour=colour)


def backend_row(backend: Mapping[str, Any]) -> list[Cell]:
    characteristics = backend.get("characteristics", {})
    in_flight, limit = backend.get("in_flight", 0), characteristics.get("max_concurrent")
    breaker = str(backend.get("breaker", "?"))
    note = "" if backend.get("reachable") else str(backend.get("last_error") or "")
    return [
        Cell(str(backend.get("id", "?"))),
        health_cell(backend),
        Cell(breaker, GREEN if breaker == "closed" else RED if breaker == "open" else YELLOW),
        Cell(f"{in_flight}/{limit}" if limit else str(in_flight), YELLOW if limit and in_flight >= limit else ""),
        queue_cell(backend.get("queue", {})),
        Cell(f"{characteristics['power_watts']:g} W" if "power_watts" in characteristics else "-"),
        thermal_cell(backend.get("thermal", {})),
        Cell(str(len(backend.get("models", [])))),
        Cell(cut(note), RED if note else ""),
    ]


def health_cell(backend: Mapping[str, Any]) -> Cell:
    if not backend.get("enabled", True):
        return Cell("disabled", DIM)
    return Cell("up", GREEN) if backend.get("reachable") else Cell("down", RED)


def queue_cell(queue: Mapping[str, int]) -> Cell:
    """`0`, or the total and who waits: `3 (high 1, normal 2)`."""
    waiting = [(p, queue[p]) for p in PRIORITIES if queue.get(p)]
    total = sum(n for _, n in waiting)
    if not total:
        return Cell("0")
    return Cell(f"{total} (" + ", ".join(f"{p} {n}" for p, n in waiting) + ")", YELLOW)


def thermal_cell(thermal: Mapping[str, Any]) -> Cell:
    level = str(thermal.get("level", "-"))
    temp = thermal.get("temp_c")
    text = level + (f" {temp:.0f}C" if isinstance(temp, int | float) else "")
    return Cell(text, {"warm": YELLOW, "hot": RED, "critical": RED}.get(level, ""))


def model_rows(backends: Sequence[Mapping[str, Any]]) -> list[list[Cell]]:
    """One row per model a backend has loaded or has learned the speed of."""
    rows = []
    for backend in backends:
        loaded = {m.get("model"): m.get("context_length") for m in backend.get("loaded", [])}
        learned = backend.get("learned_latency", {})
        for model in [*loaded, *(m for m in learned if m not in loaded)]:
            speed = learned.get(model, {})
            ttft, tokens_per_s = speed.get("ttft_ms"), speed.get("tokens_per_s")
            rows.append([
                Cell(str(backend.get("id", "?"))), Cell(str(model)),
                Cell(str(loaded[model]) if model in loaded else "not loaded", "" if model in loaded else DIM),
                Cell(f"{ttft:g} ms" if ttft is not None else "-"),
                Cell(f"{tokens_per_s:g} tok/s" if tokens_per_s else "-"),
            ])
    return rows


def decision_table(decisions: Sequence[Mapping[str, Any]], *, colour: bool) -> list[str]:
    header = ("TIME", "REQUEST", "BACKEND", "NUM_CTX", "STATUS", "DURATION", "REASON")
    return table(header, [decision_row(d) for d in decisions], colour=colour)


def decision_row(decision: Mapping[str, Any]) -> list[Cell]:
    status = int(decision.get("status") or 0)
    num_ctx, sizing = decision.get("num_ctx"), decision.get("sizing_reason")
    duration = f"{decision.get('duration_ms', 0):g} ms"
    if decision.get("queued_ms"):
        duration += f" (queued {decision['queued_ms']:g} ms)"
    error = decision.get("error")
    at = decision.get("at")
    return [
        Cell(time.strftime("%H:%M:%S", time.localtime(at)) if isinstance(at, int | float) else "-", DIM),
        Cell(f"{decision.get('operation', '?')} {decision.get('model') or '-'}"),
        Cell(str(decision.get("backend") or "-")),
        Cell(" ".join(str(part) for part in (num_ctx, sizing) if part is not None) or "-"),
        Cell(str(status), GREEN if status < 400 else YELLOW if status < 500 else RED),
        Cell(duration),
        Cell(cut(str(error or decision.get("routing_reason") or "")), RED if error else ""),
    ]


def cut(text: str, limit: int = MAX_CELL) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
