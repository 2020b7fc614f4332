"""The routing headers: what a client may ask for (in) and how the proxy explains its pick (out).

In: X-Target-Backend, X-Latency-Critical, X-Power-Efficient, X-Max-Latency-Ms, X-Max-Power-Watts,
X-Priority, X-Media-Type. Out: X-Backend-Used, X-Estimated-Latency-Ms, X-Estimated-Power-W,
X-Routing-Reason (a token clients can match, then detail: `explain.py`), X-Alternatives, and
X-Routing-Warning when the pick breaks a rule because the client asked for it.

Pure text in, values out: it takes any `Mapping[str, str]` (aiohttp's case-insensitive headers or a
plain dict) and knows nothing about the request body or the HTTP framework. A malformed value is
refused with `BadRequest` (a `ValueError`, status 400) naming the header, the value and what is
allowed, rather than silently ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from ollama_proxy.core.admission import Priority
from ollama_proxy.core.routing.explain import ascii_text
from ollama_proxy.core.routing.select import RoutingDecision
from ollama_proxy.core.routing.state import RouteRequest
from ollama_proxy.errors import BadRequest, NoBackendAvailable

# The request headers `parse_route_headers` reads; the HTTP adapter hands over just these.
ROUTE_HEADERS = ("X-Target-Backend", "X-Latency-Critical", "X-Power-Efficient", "X-Max-Latency-Ms",
                 "X-Max-Power-Watts", "X-Priority", "X-Media-Type")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_TOKEN = re.compile(r"^[a-z0-9][a-z0-9._+/-]{0,63}$")


def parse_route_headers(headers: Mapping[str, str], *, model: str | None = None,
                        context_tokens: int | None = None) -> RouteRequest:
    """Build the `RouteRequest` for one call from its headers plus what the body said.

    >>> r = parse_route_headers({"x-priority": "high", "X-Max-Power-Watts": "20"}, model="llama3")
    >>> (r.model, r.priority.label, r.max_power_watts)
    ('llama3:latest', 'high', 20.0)
    """
    if not headers:  # the usual call: none of the routing headers
        return RouteRequest(model=model, context_tokens=context_tokens)
    h = {k.lower(): v.strip() for k, v in headers.items()}
    priority_text = h.get("x-priority")
    try:
        priority = Priority.parse(priority_text) if priority_text else Priority.NORMAL
    except ValueError as exc:
        raise BadRequest(f"X-Priority: {exc}") from exc
    return RouteRequest(
        model=model,
        context_tokens=context_tokens,
        target=h.get("x-target-backend") or None,
        latency_critical=_flag(h, "x-latency-critical", "X-Latency-Critical"),
        power_efficient=_flag(h, "x-power-efficient", "X-Power-Efficient"),
        max_latency_ms=_positive(h, "x-max-latency-ms", "X-Max-Latency-Ms"),
        max_power_watts=_positive(h, "x-max-power-watts", "X-Max-Power-Watts"),
        priority=priority,
        media_type=_media_type(h.get("x-media-type")),
    )


def decision_headers(decision: RoutingDecision) -> dict[str, str]:
    """The response headers that tell the client where its request went and why."""
    headers = {
        "X-Backend-Used": decision.backend_id,
        "X-Estimated-Latency-Ms": str(round(decision.estimated_latency_ms)),
        "X-Estimated-Power-W": f"{decision.estimated_power_w:.1f}",
        "X-Routing-Reason": decision.reason,
        "X-Alternatives": ",".join(decision.alternatives),
    }
    if decision.warnings:
        headers["X-Routing-Warning"] = ascii_text("; ".join(decision.warnings))
    return headers


def refusal_headers(exc: NoBackendAvailable) -> dict[str, str]:
    """What a routing refusal says in headers: its reason token and the backends it excluded."""
    if exc.routing_reason is None:
        return {}
    return {"X-Routing-Reason": exc.routing_reason, "X-Routing-Excluded": ",".join(exc.reasons)}


def _flag(h: Mapping[str, str], key: str, name: str) -> bool:
    value = h.get(key, "").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadRequest(f"{name}: expected true/false (or 1/0, yes/no, on/off), got {value!r}")


def _positive(h: Mapping[str, str], key: str, name: str) -> float | None:
    text = h.get(key)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise BadRequest(f"{name}: expected a positive number, got {text!r}")
    return value


def _media_type(text: str | None) -> str | None:
    """Either a bare kind (`audio`, `image`) or a MIME type, whose top-level type is kept."""
    if not text:
        return None
    value = text.lower().split(";", 1)[0].strip()
    if not _TOKEN.match(value):
        raise BadRequest(f"X-Media-Type: expected a media kind such as text, image, audio or a MIME type, "
                         f"got {text!r}")
    return value.split("/", 1)[0]


# The same hints as typed fields, for fronts without headers (WebSocket messages, gRPC annotations).
FIELD_HEADERS = {"target_backend": "X-Target-Backend", "latency_critical": "X-Latency-Critical",
                 "power_efficient": "X-Power-Efficient", "max_latency_ms": "X-Max-Latency-Ms",
                 "max_power_watts": "X-Max-Power-Watts", "priority": "X-Priority", "media_type": "X-Media-Type"}


def parse_route_fields(fields: Mapping[str, object]) -> RouteRequest:
    """`parse_route_headers` for typed values (`{"latency_critical": True, "max_latency_ms": 500}`): the
    same meanings and checks, with errors naming the field. None means unset.

    >>> parse_route_fields({"priority": "critical", "max_power_watts": 15}).max_power_watts
    15.0
    """
    headers: dict[str, str] = {}
    for key, header in FIELD_HEADERS.items():
        value = fields.get(key)
        if value is None:
            continue
        if isinstance(value, bool):
            headers[header] = "true" if value else "false"
        elif isinstance(value, int | float | str):
            headers[header] = str(value)
        else:
            raise BadRequest(f"{key}: expected a string, number or boolean, got {type(value).__name__}")
    try:
        return parse_route_headers(headers)
    except BadRequest as exc:
        message = str(exc)
        for key, header in FIELD_HEADERS.items():
            message = message.replace(header, key)
        raise BadRequest(message, exc.status) from None
