"""How a routing decision or refusal explains itself: `X-Routing-Reason` values.

A reason is a token from a fixed vocabulary, which clients can match, then optional detail after
"; " (free text, ASCII). The token names the rule that decided:

    target            X-Target-Backend chose the backend
    only-candidate    one backend was left after the filters
    latency-critical  X-Latency-Critical (or live media): the smallest estimated time until answered
    power-efficient   X-Power-Efficient: scored with power weighted up
    mode-<name>       the mode's scoring (mode-balanced, mode-efficiency, mode-quiet, ...); for
                      mode-performance, the smallest estimate as with latency-critical
    spill-over        the mode's preferred backend had a queue wait past the mode's patience
    failover          an earlier pick failed before the first byte (detail: which and why)

A refusal's token names what refused it:

    unknown-target    X-Target-Backend names no configured backend (400)
    no-model          no backend has the model (404)
    target-unavailable  the target cannot take the request (503)
    power-cap         ultra-efficiency's router.ultra_efficiency_max_watts excluded what was left (503)
    max-power         X-Max-Power-Watts excluded what was left (503)
    max-latency       X-Max-Latency-Ms excluded what was left (503)
    unavailable       disabled, unhealthy, breaker open or no backends at all (503)

Pure text: selection (`select.py`) hands over the numbers.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from ollama_proxy.core.modes import EfficiencyMode
from ollama_proxy.core.routing.fleet import OVER_LATENCY, OVER_POWER, POWER_CAP
from ollama_proxy.core.routing.state import BackendView, RouteRequest
from ollama_proxy.core.routing.weights import FACTORS
from ollama_proxy.errors import NoBackendAvailable

# Words for the weighted pick's detail, one per `Weights` factor.
WHY = {"latency": "faster", "power": "lower power", "load": "less busy", "thermal": "cooler",
       "noise": "quieter", "priority": "higher priority", "residency": "model loaded",
       "context_fit": "loaded context fits", "health": "breaker closed"}

_WHY_BY_FACTOR = tuple(WHY[name] for name in FACTORS)  # in `FACTORS` order
_FAILOVER = "failover; "
_MODE_TOKENS = {mode: f"mode-{mode.value}" for mode in EfficiencyMode}


def ascii_text(text: str) -> str:
    """Header-safe: sensor names and thermal reasons may hold anything."""
    return text.encode("ascii", "replace").decode("ascii")


def mode_token(mode: EfficiencyMode) -> str:
    return _MODE_TOKENS[mode]


def fastest_token(request: RouteRequest, mode: EfficiencyMode) -> str:
    return "latency-critical" if request.wants_low_latency else mode_token(mode)


def weighted_token(request: RouteRequest, mode: EfficiencyMode) -> str:
    return "power-efficient" if request.power_efficient else mode_token(mode)


def fastest_detail(ids: Sequence[str], estimates: Sequence[float], tied: int, by_priority: bool) -> str:
    """`nvidia est. 150 ms vs igpu 400 ms` (the pick and the runner-up, in ranking order)."""
    if tied > 1:
        return f"{ids[0]} est. {estimates[0]:.0f} ms, tie of {tied}, " + (
            "higher priority" if by_priority else "random pick")
    return f"{ids[0]} est. {estimates[0]:.0f} ms vs {ids[1]} {estimates[1]:.0f} ms"


def tie_detail(tied: int, by_priority: bool) -> str:
    return f"near-tie of {tied}, " + ("higher priority" if by_priority else "random pick")


def gains_detail(weights: Sequence[float], mine: Sequence[float], theirs: Sequence[float], competitors: int) -> str:
    """The two factors that set the pick apart from the runner-up most: the largest weighted gains
    `weights[i] * (mine[i] - theirs[i])` (in `FACTORS` order; equal gains rank by the factor's name,
    last first, as a reverse sort of (gain, name) would)."""
    # One pass for the top two, no list: the detail is written for every weighted pick.
    best = second = -1
    top = runner_up = 0.0
    for i, name in enumerate(FACTORS):
        gain = weights[i] * (mine[i] - theirs[i])
        if gain <= 0:
            continue
        if best < 0 or gain > top or (gain == top and name > FACTORS[best]):
            best, second, top, runner_up = i, best, gain, top
        elif second < 0 or gain > runner_up or (gain == runner_up and name > FACTORS[second]):
            second, runner_up = i, gain
    if best < 0:
        return f"best overall (best of {competitors})"
    if second < 0:
        return f"{_WHY_BY_FACTOR[best]} (best of {competitors})"
    return f"{_WHY_BY_FACTOR[best]}, {_WHY_BY_FACTOR[second]} (best of {competitors})"


def over_cap_warning(backend_id: str, power_w: float, mode: EfficiencyMode, cap_w: float) -> str:
    return (f"{backend_id} draws {power_w:g} W, over {mode.value}'s {cap_w:g} W cap; served because "
            "X-Target-Backend asked for it")


def critical_warning(view: BackendView) -> str:
    return (f"{view.id} is at a critical temperature ({view.thermal.reason or 'no reason given'}); served because "
            "X-Target-Backend asked for it")


def thermal_exclusion(view: BackendView) -> str:
    return f"thermal critical ({view.thermal.reason or 'no reason given'})"


def with_excluded(reason: str, excluded: int) -> str:
    return f"{reason}; {excluded} excluded" if excluded else reason


def failed_over(reason: str, failed: str, why: str) -> str:
    """The reason after a failover: the token first, then each failover newest first, then the pick's."""
    rest = reason[len(_FAILOVER):] if reason.startswith(_FAILOVER) else reason
    return f"{_FAILOVER}failed over from {failed} ({why}); {rest}"


def rejection(request: RouteRequest, excluded: Mapping[str, str], codes: Collection[int], model_nowhere: bool,
              power_cap_w: float | None) -> NoBackendAvailable:
    """The refusal when nothing is eligible; `codes` are the screened rows' exclusion codes."""
    detail = "; ".join(f"{bid}: {why}" for bid, why in excluded.items())
    names = ", ".join(excluded)
    if model_nowhere:
        where = f"backend {request.target!r}" if request.target else "any backend"
        return NoBackendAvailable(f"model {request.model!r} not found on {where} ({detail})", dict(excluded),
                                  status=404, routing_reason=f"no-model; {request.model} on {where}")
    if request.target is not None:
        return NoBackendAvailable(f"X-Target-Backend {request.target!r} cannot take the request: {detail}",
                                  dict(excluded), status=503,
                                  routing_reason=ascii_text(f"target-unavailable; {detail}"))
    if POWER_CAP in codes:
        token = (f"power-cap; ultra-efficiency mode allows at most {power_cap_w:g} W "
                 "(router.ultra_efficiency_max_watts)")
    elif OVER_POWER in codes:
        token = f"max-power; X-Max-Power-Watts {request.max_power_watts:g} W"
    elif OVER_LATENCY in codes:
        token = f"max-latency; X-Max-Latency-Ms {request.max_latency_ms:.0f} ms"
    else:
        token = "unavailable; no backend can serve"
    return NoBackendAvailable(f"no backend satisfies the request: {detail}", dict(excluded), status=503,
                              routing_reason=ascii_text(f"{token}; excluded {names}"))
