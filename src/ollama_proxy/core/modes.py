"""Efficiency modes: the names users choose between and what each asks of the router."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class EfficiencyMode(StrEnum):
    PERFORMANCE = "performance"
    BALANCED = "balanced"
    EFFICIENCY = "efficiency"
    QUIET = "quiet"
    AUTO = "auto"
    ULTRA_EFFICIENCY = "ultra-efficiency"

    @classmethod
    def parse(cls, text: str) -> EfficiencyMode:
        try:
            return cls(text.strip().lower().replace("_", "-"))
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown efficiency mode {text!r}; allowed: {allowed}") from None


@dataclass(frozen=True, slots=True)
class ModePolicy:
    """The rules of a mode beyond its scoring weights (`routing/weights.py`).

    `fastest`: pick the smallest estimated time until answered, scores only ordering equal estimates.
    `patience_ms`: the queue wait tolerated at the mode's preferred backend before the request spills
    over to the next one by score (the mode's taste in power or noise is worth waiting for, up to here).
    `power_capped`: only backends within `router.ultra_efficiency_max_watts` may serve.
    """

    fastest: bool = False
    patience_ms: float = math.inf
    power_capped: bool = False


POLICIES: dict[EfficiencyMode, ModePolicy] = {
    EfficiencyMode.PERFORMANCE: ModePolicy(fastest=True),
    EfficiencyMode.BALANCED: ModePolicy(patience_ms=500.0),
    EfficiencyMode.EFFICIENCY: ModePolicy(patience_ms=1_000.0),
    EfficiencyMode.QUIET: ModePolicy(patience_ms=1_500.0),
    EfficiencyMode.ULTRA_EFFICIENCY: ModePolicy(patience_ms=3_000.0, power_capped=True),
    # `auto` is resolved by the caller; reaching the router unresolved it acts as balanced.
    EfficiencyMode.AUTO: ModePolicy(patience_ms=500.0),
}
