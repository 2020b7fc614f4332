"""The access log line and the request metrics of a finished HTTP request, the same for every HTTP front."""

from __future__ import annotations

import logging

from ollama_proxy.adapters.http.calls import Exchange
from ollama_proxy.adapters.http.metrics import Metrics
from ollama_proxy.config.schema import Config
from ollama_proxy.logs import InfoLines

log = InfoLines(logging.getLogger("ollama_proxy.access"))


class AccessLog:
    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.metrics = metrics
        self.follow(config)

    def follow(self, config: Config) -> None:
        # Only the JSON log reads a record's fields: text logging does not build them per request.
        self._fields = config.server.log_format == "json"

    def finished(self, exchange: Exchange, elapsed: float, note: str | None = None) -> None:
        """One log line and the metrics for a request that took `elapsed` seconds."""
        record = exchange.record
        backend = record.backend_id if record and record.backend_id else "-"
        self.metrics.observe(backend, exchange.status, elapsed)
        if not log.enabled():
            return
        sizing = record.sizing if record else None
        queued_ms = record.queued_ms if record else 0.0
        failure = exchange.failure or (record.failure if record else None)
        sized = f" num_ctx={sizing.num_ctx} ({sizing.reason})" if sizing else ""  # a StrEnum formats as its value
        queued = f" queued={queued_ms:.1f}ms" if queued_ms >= 0.1 else ""
        ending = f" failed: {failure}" if failure else (f" ({note})" if note else "")
        fields = {"request_id": exchange.request_id, "method": exchange.method, "path": exchange.requested,
                  "model": exchange.model, "backend": backend, "status": exchange.status,
                  "duration_ms": round(elapsed * 1000, 1), "queued_ms": round(queued_ms, 1),
                  "num_ctx": sizing.num_ctx if sizing else None,
                  "sizing_reason": sizing.reason.value if sizing else None,
                  "failure": failure or note} if self._fields else None
        log.info(f"{exchange.request_id} {exchange.method} {exchange.requested} model={exchange.model or '-'} "
                 f"backend={backend}{sized} status={exchange.status:d} {elapsed * 1000:.1f}ms{queued}{ending}", fields)
