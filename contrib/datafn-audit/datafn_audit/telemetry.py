"""Optional OpenTelemetry spans and Prometheus metrics for each audited sync operation.

Neither library is a dependency: each is used when it is installed (or when ``tracing`` /
``metrics`` is set to true, which then requires it). A span is created after the operation,
with its real start time, so nothing has to be carried across hooks but the start. The
Prometheus collectors are created once per process in the default registry:

- ``datafn_sync_operations_total{phase, side, outcome}`` — counter;
- ``datafn_sync_duration_seconds{phase, side}`` — histogram.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from typing import Any

from datafn import ConfigError

__all__ = ["Telemetry"]

log = logging.getLogger("datafn_audit")

_metrics_lock = threading.Lock()
_collectors: dict[str, Any] = {}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _collectors_once() -> dict[str, Any]:
    with _metrics_lock:
        if not _collectors:
            from prometheus_client import Counter, Histogram

            _collectors["operations"] = Counter(
                "datafn_sync_operations",
                "Sync operations recorded by datafn-audit",
                ["phase", "side", "outcome"],
            )
            _collectors["duration"] = Histogram(
                "datafn_sync_duration_seconds",
                "Duration of sync operations recorded by datafn-audit",
                ["phase", "side"],
            )
        return _collectors


class Telemetry:
    """Spans and metrics; a failure disables that part and is logged once."""

    def __init__(self, *, tracing: bool | None, metrics: bool | None) -> None:
        self.tracer: Any = None
        self.metrics: dict[str, Any] | None = None
        if tracing or (tracing is None and _installed("opentelemetry")):
            try:
                from opentelemetry import trace
            except ImportError as exc:
                raise ConfigError(
                    "needs OpenTelemetry: pip install 'datafn-audit[otel]'",
                    key="tool.datafn.audit.tracing",
                ) from exc
            self.tracer = trace.get_tracer("datafn_audit")
        if metrics or (metrics is None and _installed("prometheus_client")):
            try:
                self.metrics = _collectors_once()
            except ImportError as exc:
                raise ConfigError(
                    "needs prometheus_client: pip install 'datafn-audit[prometheus]'",
                    key="tool.datafn.audit.metrics",
                ) from exc

    def record(self, record: dict[str, Any], started_ns: int | None) -> None:
        phase, side, outcome = record["phase"], record["side"], record["outcome"]
        if self.tracer is not None:
            try:
                self._span(record, started_ns)
            except Exception:
                log.warning("OpenTelemetry spans disabled after an error", exc_info=True)
                self.tracer = None
        if self.metrics is not None:
            try:
                self.metrics["operations"].labels(phase, side, outcome).inc()
                if record.get("duration") is not None:
                    self.metrics["duration"].labels(phase, side).observe(record["duration"])
            except Exception:
                log.warning("Prometheus metrics disabled after an error", exc_info=True)
                self.metrics = None

    def _span(self, record: dict[str, Any], started_ns: int | None) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        kind = SpanKind.CLIENT if record["side"] == "client" else SpanKind.SERVER
        attributes = {
            "datafn.phase": record["phase"],
            "datafn.side": record["side"],
            "datafn.outcome": record["outcome"],
            "datafn.resources": [str(r) for r in record["resources"]],
        }
        for key in ("client_id", "namespace"):
            if record.get(key) is not None:
                attributes[f"datafn.{key}"] = str(record[key])
        for key, value in (record.get("counts") or {}).items():
            if isinstance(value, int):
                attributes[f"datafn.count.{key}"] = value
        span = self.tracer.start_span(
            f"datafn.{record['phase']}", kind=kind, attributes=attributes, start_time=started_ns
        )
        if record["outcome"] in ("failed", "vetoed"):
            span.set_status(Status(StatusCode.ERROR, record.get("error") or record["outcome"]))
        span.end(end_time=time.time_ns())
