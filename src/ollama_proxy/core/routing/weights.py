"""How much each efficiency mode cares about each scoring factor, and how request headers shift that.

Scoring (`select.py`) turns every factor into a number in [0, 1], higher is better, and takes the
weighted mean with these weights. The tables are tuned so that with the four reference profiles
(npu 3 W / 800 ms, igpu 12 W / 400 ms, nvidia 55 W / 120 ms, cpu 28 W / 1500 ms) `performance`
picks nvidia, `balanced` the igpu, `efficiency` and `ultra-efficiency` the npu, `quiet` the npu or
the igpu (a near-tie), and the cpu only when it is the only one left; the unit tests pin that.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import cached_property

from ollama_proxy.core.modes import EfficiencyMode

# The scoring factors, in the order of `Weights.vector` and `BackendScore.factors`.
FACTORS = ("latency", "power", "load", "thermal", "noise", "priority", "residency", "context_fit", "health")


@dataclass(frozen=True)
class Weights:
    latency: float = 0.0
    power: float = 0.0
    load: float = 0.0
    thermal: float = 0.0
    noise: float = 0.0
    priority: float = 0.0
    residency: float = 0.0
    context_fit: float = 0.0
    health: float = 0.0
    # Scale of the latency and power factors: the value that scores 0.5. A laptop-sized guess;
    # each factor stays monotonic whatever the hardware, only the trade-off between them shifts.
    latency_ref_ms: float = 500.0
    power_ref_w: float = 25.0

    def __post_init__(self) -> None:
        negative = [f.name for f in fields(self) if getattr(self, f.name) < 0]
        if negative:
            raise ValueError(f"weights must be >= 0; negative: {', '.join(negative)}")
        if self.latency_ref_ms <= 0 or self.power_ref_w <= 0:
            raise ValueError("latency_ref_ms and power_ref_w must be > 0")
        if self.total == 0:
            raise ValueError(f"at least one of the factor weights must be > 0: {', '.join(FACTORS)}")

    @cached_property
    def vector(self) -> tuple[float, ...]:
        """The factor weights in `FACTORS` order (cached: scoring reads it once per backend)."""
        return tuple(getattr(self, name) for name in FACTORS)

    @cached_property
    def total(self) -> float:
        return sum(self.vector)

    def shifted(self, *, latency_critical: bool, power_efficient: bool) -> Weights:
        """Apply `X-Latency-Critical` / `X-Power-Efficient`; both at once cancel out roughly.

        Latency-critical also raises residency: a cold load costs seconds, more than any backend's
        speed difference.
        """
        w = self
        if latency_critical:
            w = replace(w, latency=w.latency + 0.5, residency=w.residency + 0.1, power=w.power * 0.5)
        if power_efficient:
            w = replace(w, power=w.power + 0.5, latency=w.latency * 0.5)
        return w


MODE_WEIGHTS: dict[EfficiencyMode, Weights] = {
    EfficiencyMode.PERFORMANCE: Weights(latency=0.45, power=0.02, load=0.15, thermal=0.05, priority=0.03,
                                        residency=0.15, context_fit=0.10, health=0.05),
    EfficiencyMode.BALANCED: Weights(latency=0.25, power=0.20, load=0.12, thermal=0.08, noise=0.03,
                                     priority=0.03, residency=0.15, context_fit=0.09, health=0.05),
    EfficiencyMode.EFFICIENCY: Weights(latency=0.10, power=0.45, load=0.08, thermal=0.08, noise=0.03,
                                       priority=0.03, residency=0.12, context_fit=0.06, health=0.05),
    EfficiencyMode.QUIET: Weights(latency=0.15, power=0.15, load=0.08, thermal=0.15, noise=0.25,
                                  priority=0.02, residency=0.10, context_fit=0.05, health=0.05),
    EfficiencyMode.ULTRA_EFFICIENCY: Weights(latency=0.02, power=0.75, load=0.04, thermal=0.05, noise=0.02,
                                             priority=0.01, residency=0.06, context_fit=0.03, health=0.02),
}
# `auto` is resolved to a concrete mode from system state by the caller; if it reaches the router
# unresolved it behaves as balanced.
MODE_WEIGHTS[EfficiencyMode.AUTO] = MODE_WEIGHTS[EfficiencyMode.BALANCED]


def weights_for(mode: EfficiencyMode) -> Weights:
    return MODE_WEIGHTS[mode]
