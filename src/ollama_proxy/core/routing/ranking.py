"""What screening and scoring hand the decision (`select.py`), whichever way they were computed:
the eligible rows best first with their scores and estimates, and why the others were left out.

Two passes produce it from the same `Fleet` and `Load`: `scalar.py`, one backend at a time in plain
Python (a laptop's two to eight backends: numpy's per-call cost would dominate), and `vector.py`,
every backend at once as numpy arrays (a large fleet). They decide identically; the unit tests hold
both to one reference.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from ollama_proxy.core.routing import explain
from ollama_proxy.core.routing.fleet import (
    BREAKER_OPEN,
    DISABLED,
    ELIGIBLE,
    NO_MODEL,
    NOT_REPORTED,
    OVER_LATENCY,
    OVER_POWER,
    POWER_CAP,
    UNHEALTHY,
    Fleet,
)
from ollama_proxy.core.routing.state import RouteRequest
from ollama_proxy.core.routing.weights import FACTORS

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True, slots=True)
class BackendScore:
    """A weighted mean in [0, 1]; `factors` line up with `FACTORS` (see `as_dict`)."""

    total: float
    estimated_latency_ms: float
    factors: tuple[float, ...]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(FACTORS, self.factors, strict=True))


@dataclass(slots=True)
class Ranking:
    """The eligible rows best first (`ranked`, their ids `names`; the first `tied` lead within the tie
    margin), per row the time until answered (`estimate`) and the queue wait (`wait`, None when nobody
    waits anywhere) and the weighted factors (`factors_of`), the scores and exclusions as the decision
    reports them, and the warnings of a rule broken because the client asked for it."""

    ranked: list[int]
    names: list[str]
    tied: int
    estimate: Callable[[int], float]
    wait: Callable[[int], float] | None
    factors_of: Callable[[int], tuple[float, ...]]
    scores: Mapping[str, BackendScore]
    excluded: Mapping[str, str]
    warnings: list[str]


class Scores(Mapping[str, BackendScore]):
    """Backend id -> `BackendScore` over the eligible rows (in row order), each built only when read:
    a failover reads one, a served request usually none."""

    def __init__(self, fleet: Fleet, eligible: list[int], totals: Mapping[int, float], estimates: Sequence[float],
                 factors: Mapping[int, tuple[float, ...]]) -> None:
        self._fleet, self._eligible, self._totals = fleet, eligible, totals
        self._estimates, self._factors = estimates, factors

    def __getitem__(self, backend_id: str) -> BackendScore:
        row = self._fleet.index.get(backend_id)
        if row is None or row not in self._totals:
            raise KeyError(backend_id)
        return BackendScore(self._totals[row], self._estimates[row], self._factors[row])

    def __iter__(self) -> Iterator[str]:
        ids = self._fleet.ids
        return (ids[r] for r in self._eligible)

    def __len__(self) -> int:
        return len(self._eligible)


class Excluded(Mapping[str, str]):
    """Backend id -> why it was left out, in backend order (thermal exclusions last); the texts are
    written only when read, which a served request rarely does. `codes` holds every screened row's
    code (a list or a numpy array), `estimates` the time until answered per row."""

    def __init__(self, request: RouteRequest, fleet: Fleet, codes: Iterable[int], target: int | None,
                 spared: Collection[int], refused: int, estimates: Sequence[float] | np.ndarray,
                 power_cap_w: float | None) -> None:
        self._request, self._fleet, self._codes, self._target = request, fleet, codes, target
        self._spared, self._count, self._estimates = spared, refused + len(spared), estimates
        self._cap = power_cap_w
        self._texts: dict[str, str] | None = None

    def _all(self) -> dict[str, str]:
        if self._texts is None:
            codes = [int(code) for code in self._codes]
            rows = [r for r, code in enumerate(codes) if code != ELIGIBLE and self._target in (None, r)]
            ids, views = self._fleet.ids, self._fleet.views
            self._texts = {ids[r]: self._text(r, codes[r]) for r in rows}
            self._texts.update((ids[r], explain.thermal_exclusion(views[r])) for r in map(int, self._spared))
        return self._texts

    def _text(self, row: int, code: int) -> str:
        view, request = self._fleet.views[row], self._request
        if code == POWER_CAP:
            return (f"power {view.power_watts:g} W over ultra-efficiency's {self._cap:g} W cap "
                    "(router.ultra_efficiency_max_watts)")
        if code == OVER_POWER:
            return f"power {view.power_watts:g} W over the {request.max_power_watts:g} W budget"
        if code == OVER_LATENCY:
            return (f"estimated latency {float(self._estimates[row]):.0f} ms over the "
                    f"{request.max_latency_ms:.0f} ms budget")
        if code == NO_MODEL:
            return f"model {request.model!r} not available"
        return _FIXED_TEXT[code]

    def __getitem__(self, backend_id: str) -> str:
        return self._all()[backend_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return self._count


# What a decision that left nothing out reports (the usual one): no `Excluded` to build.
NOTHING_EXCLUDED: Mapping[str, str] = MappingProxyType({})

_FIXED_TEXT = {DISABLED: "disabled", UNHEALTHY: "unhealthy (failing health checks)",
               BREAKER_OPEN: "circuit breaker open", NOT_REPORTED: "model list not reported yet"}
