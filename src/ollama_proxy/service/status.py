"""The proxy's own views as data: health, backends, the efficiency mode, thermal state. Every front
(the HTTP admin endpoints, later D-Bus and a status page) renders these same dicts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ollama_proxy import __version__
from ollama_proxy.config.schema import Config
from ollama_proxy.core.modes import EfficiencyMode
from ollama_proxy.core.system.thermal import thermal_report
from ollama_proxy.service.context import ContextService
from ollama_proxy.service.decisions import DecisionLog
from ollama_proxy.service.pool import BackendPool
from ollama_proxy.service.router import Router


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
        monitor = self.router.monitor
        snapshot = monitor.snapshot if monitor else None
        if snapshot is None:
            return {"available": False, "reason": "no system sample taken yet"}
        return thermal_report(snapshot, list(self.config.backends), self.config.system, now=self._clock())
