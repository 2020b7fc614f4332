"""The proxy's own views as data: health, backends, the efficiency mode, thermal state, routing. Every
front (the HTTP admin endpoints, the status page, D-Bus) renders these same dicts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ollama_proxy import __version__
from ollama_proxy.config.schema import Config
from ollama_proxy.core.modes import EfficiencyMode
from ollama_proxy.core.routing.state import BreakerState, ThermalLevel
from ollama_proxy.core.system.telemetry import SystemSnapshot
from ollama_proxy.core.system.thermal import classify, cpu_package_probe, detect_throttling, gpu_probe, thermal_report
from ollama_proxy.service.context import ContextService
from ollama_proxy.service.decisions import DecisionLog
from ollama_proxy.service.pool import Backend, BackendPool
from ollama_proxy.service.router import Router

# Worst last: the machine is as hot as its hottest part.
_LEVELS = tuple(ThermalLevel)


class StatusViews:
    def __init__(self, config: Config, pool: BackendPool, router: Router, context: ContextService,
                 decisions: DecisionLog, *, clock: Callable[[], float]) -> None:
        self.config = config
        self.decisions = decisions
        self.pool = pool
        self.router = router
        self.context = context
        self._clock = clock

    def health(self) -> dict[str, Any]:
        backends = {b.id: {"reachable": b.reachable, "enabled": b.config.enabled, "endpoint": b.config.endpoint,
                           "type": b.config.type, "error": b.last_error} for b in self.pool}
        up = [b for b in backends.values() if b["enabled"] and b["reachable"]]
        enabled = [b for b in backends.values() if b["enabled"]]
        return {
            # "down" (HTTP 503) when nothing can serve, so a health check on the status code means something.
            "status": "ok" if len(up) == len(enabled) else "degraded" if up else "down",
            "version": __version__,
            "backends": backends,
            "context": {"sizes": list(self.config.context.sizes),
                        "default_route": self.config.context.default_route.value, **self.context.stats()},
        }

    def backends(self) -> dict[str, Any]:
        mode, reason = self.router.effective_mode()
        return {"mode": mode.value, "mode_reason": reason, "backends": self.router.backends_status()}

    def overview(self, recent: int = 50) -> dict[str, Any]:
        """Everything the status page and `ollama-proxy status` show, in one document."""
        health = self.health()
        return {"status": health["status"], "version": health["version"], "efficiency": self.efficiency(),
                "backends": self.router.backends_status(), "context": health["context"],
                "recent": self.decisions.recent(recent)}

    def efficiency(self) -> dict[str, Any]:
        mode, reason = self.router.effective_mode()
        return {"mode": self.router.set_mode.value, "effective_mode": mode.value, "reason": reason,
                "modes": [m.value for m in EfficiencyMode]}

    def set_mode(self, text: str) -> dict[str, Any]:
        """Set the efficiency mode; ValueError naming the modes for an unknown one."""
        self.router.choose_mode(EfficiencyMode.parse(text))
        return self.efficiency()

    def thermal(self) -> dict[str, Any]:
        snapshot = self._snapshot()
        if snapshot is None:
            return {"available": False, "reason": "no system sample taken yet"}
        return thermal_report(snapshot, list(self.config.backends), self.config.system, now=self._clock())

    def backend_health(self) -> dict[str, str]:
        """Each backend's health in one word: healthy, degraded (answering, breaker not closed), down,
        disabled, or unknown (before its first health check)."""
        now = self._clock()
        return {b.id: _health(b, now) for b in self.pool}

    def backend_summaries(self) -> list[dict[str, Any]]:
        """One flat record per backend (what a desktop shows): health in one word, queue as a total."""
        health = self.backend_health()
        return [{
            "id": status["id"], "name": status["name"], "hardware": status["hardware"], "health": health[status["id"]],
            "models": status["models"] or [], "loaded": {m["model"]: m["context_length"] for m in status["loaded"]},
            "queued": sum(status["queue"].values()), "in_flight": status["in_flight"],
            "power_watts": float(status["characteristics"]["power_watts"]), "thermal": status["thermal"]["level"],
            "url": status["endpoint"],
        } for status in self.router.backends_status()]

    def routed_counts(self) -> dict[str, int]:
        """Requests routed to each backend since start (every configured backend listed, zeros too)."""
        counts = self.decisions.routed
        return {**dict.fromkeys(self.pool.backends, 0), **counts}

    def last_backend(self) -> str:
        """The backend of the most recent routed request ("" before any)."""
        return self.decisions.last_backend or ""

    def thermal_state(self) -> dict[str, Any]:
        """The machine as a whole: every temperature and fan, whether anything throttles, and one state
        (cool, warm, hot, critical: its hottest part's; unknown before the first sample) with its reason."""
        snapshot = self._snapshot()
        if snapshot is None:
            return {"temperatures": {}, "fans": {}, "throttling": False, "state": "unknown",
                    "detail": "no system sample taken yet"}
        temperatures = {f"{z.name} ({z.type})": z.celsius for z in snapshot.zones}
        temperatures.update({f"{s.chip} {s.label}": s.celsius for s in snapshot.sensors})
        temperatures.update({f"gpu{g.index} ({g.name})": g.celsius for g in snapshot.gpus if g.celsius is not None})
        judged = [classify(probe, self.config.system) for probe in (cpu_package_probe(snapshot), gpu_probe(snapshot))
                  if probe is not None]
        level, detail = max(judged, key=lambda j: _LEVELS.index(j[0]),
                            default=(ThermalLevel.COOL, "no temperature sensor on this machine"))
        return {"temperatures": temperatures, "fans": {f"{f.chip} {f.label}": f.rpm for f in snapshot.fans},
                "throttling": bool(detect_throttling(snapshot)), "state": level.value, "detail": detail}

    def power_state(self) -> dict[str, Any]:
        """On battery or not, and the battery's charge (None without a battery or a sample)."""
        snapshot = self._snapshot()
        if snapshot is None:
            return {"on_battery": False, "battery_percent": None}
        return {"on_battery": snapshot.power.on_battery, "battery_percent": snapshot.power.battery_percent}

    def _snapshot(self) -> SystemSnapshot | None:
        monitor = self.router.monitor
        return monitor.snapshot if monitor else None


def _health(backend: Backend, now: float) -> str:
    if not backend.config.enabled:
        return "disabled"
    if backend.reachable is None:
        return "unknown"
    if not backend.reachable:
        return "down"
    return "healthy" if backend.breaker.state(now) is BreakerState.CLOSED else "degraded"
