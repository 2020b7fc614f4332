"""Efficiency modes: the names users choose between and what each asks of the router."""

from __future__ import annotations

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
