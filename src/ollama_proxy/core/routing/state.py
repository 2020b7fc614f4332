"""What backend selection reads: a snapshot of each backend and of what the request needs.

These are plain frozen values. The async backend pool owns the live state (health checks,
`/api/tags` and `/api/ps` polling, in-flight counters, breakers, learned latency) and builds a
`BackendView` per backend from it; selection never sees the pool, the config objects or the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from ollama_proxy.core.admission import Priority
from ollama_proxy.core.ollama_api import canonical_model

# Media types where a stall is audible or visible: treated as latency-critical.
REALTIME_MEDIA = frozenset({"audio", "video", "voice", "realtime"})


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class ThermalLevel(StrEnum):
    COOL = "cool"
    WARM = "warm"
    HOT = "hot"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class ThermalState:
    level: ThermalLevel = ThermalLevel.COOL
    temp_c: float | None = None
    reason: str = ""


class SampleKind(StrEnum):
    """Work whose speed is learned and estimated apart: a chat model embeds far faster than it answers."""

    GENERATION = "generation"
    EMBEDDING = "embedding"


# Plain, not frozen: built on every request (a learned sample, a request's wishes), and a frozen
# dataclass costs four times as much to build.
@dataclass(slots=True)
class LatencyStats:
    """Learned behaviour of one model on one backend (moving averages, see `latency.py`)."""

    ttft_ms: float
    tokens_per_s: float | None
    service_ms: float
    samples: int


@dataclass(frozen=True, slots=True)
class BackendView:
    """One backend as selection sees it at one instant.

    `models` is None until the backend has answered `/api/tags` (or `/v1/models`) once; selection is
    lenient with such backends. `loaded` maps each resident model to the context it was loaded with
    (`/api/ps` `context_length`; None when the server is too old to say). `queued` counts waiters
    per requested priority, best-effort first. Model names are normalised on construction.
    `hardware` is the config's `Hardware` value (a str enum), kept as text so the core does not
    import the config package.
    """

    id: str
    hardware: str = "other"
    type: str = "ollama"
    enabled: bool = True
    power_watts: float = 15.0
    avg_latency_ms: float = 1000.0
    priority: int = 1
    max_concurrent: int = 4
    healthy: bool = True
    breaker: BreakerState = BreakerState.CLOSED
    models: frozenset[str] | None = None
    loaded: Mapping[str, int | None] = field(default_factory=dict)
    in_flight: int = 0
    queued: tuple[int, int, int, int] = (0, 0, 0, 0)
    latency: Mapping[str, LatencyStats] = field(default_factory=dict)  # generation
    embedding_latency: Mapping[str, LatencyStats] = field(default_factory=dict)
    load_ms: Mapping[str, float] = field(default_factory=dict)  # learned load time per model
    thermal: ThermalState = ThermalState()

    def __post_init__(self) -> None:
        if self.max_concurrent < 1:  # the queue wait divides by it (the config refuses it too)
            raise ValueError(f"backend {self.id!r}: max_concurrent must be at least 1, got {self.max_concurrent}")
        if self.models is not None:
            object.__setattr__(self, "models", frozenset(canonical_model(m) for m in self.models))
        object.__setattr__(self, "loaded", MappingProxyType(
            {canonical_model(m): ctx for m, ctx in self.loaded.items()}))
        object.__setattr__(self, "latency", MappingProxyType(
            {canonical_model(m): s for m, s in self.latency.items()}))
        object.__setattr__(self, "embedding_latency", MappingProxyType(
            {canonical_model(m): s for m, s in self.embedding_latency.items()}))
        object.__setattr__(self, "load_ms", MappingProxyType(
            {canonical_model(m): ms for m, ms in self.load_ms.items()}))

    def has_model(self, model: str) -> bool | None:
        """True or False when known; None when the backend has not reported its models yet.

        A resident model counts even if the last model list missed it (the lists are polled).
        """
        if model in self.loaded:
            return True
        return None if self.models is None else model in self.models

    def fits(self, model: str, context_tokens: int | None) -> bool:
        """Resident at a context that fits (Ollama reloads a runner whose num_ctx differs, reference 4.5)."""
        if model not in self.loaded:
            return False
        context = self.loaded[model]
        return context_tokens is None or context is None or context >= context_tokens

    @property
    def queued_total(self) -> int:
        return sum(self.queued)


@dataclass(slots=True)
class RouteRequest:
    """What one request asks of the router; built from the body and `parse_route_headers`.

    `model` is normalised on construction; None for calls that name no model.
    `context_tokens` is the context the context engine wants (`num_ctx`), None when it does not care.
    `kind` says which learned speeds estimate it; `reply_tokens` is the reply length it asks for
    (`num_predict`, `max_tokens`), None to expect the model's typical one (`latency.expected_reply_tokens`).
    """

    model: str | None = None
    context_tokens: int | None = None
    kind: SampleKind = SampleKind.GENERATION
    reply_tokens: int | None = None
    target: str | None = None
    latency_critical: bool = False
    power_efficient: bool = False
    max_latency_ms: float | None = None
    max_power_watts: float | None = None
    priority: Priority = Priority.NORMAL
    media_type: str | None = None

    def __post_init__(self) -> None:
        if self.model is not None:
            self.model = canonical_model(self.model)

    def asked(self, model: str | None, context_tokens: int | None, kind: SampleKind,
              reply_tokens: int | None) -> RouteRequest:
        """These headers' request for one call (`dataclasses.replace` costs five times as much)."""
        return RouteRequest(model, context_tokens, kind, reply_tokens, self.target, self.latency_critical,
                            self.power_efficient, self.max_latency_ms, self.max_power_watts, self.priority,
                            self.media_type)

    @property
    def wants_low_latency(self) -> bool:
        """Latency-critical by header, or by a live media type where a stall is audible or visible."""
        return self.latency_critical or self.media_type in REALTIME_MEDIA

