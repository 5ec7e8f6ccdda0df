"""datafn-audit: a fail-open audit trail of sync operations.

Install it and configure ``[tool.datafn.audit]`` (see :mod:`datafn_audit.settings`): every
completed sync operation, on the client and on the server, becomes one JSON line (see
:mod:`datafn_audit.record`) on a logger, in a rotating file or passed to a function of yours;
with OpenTelemetry or prometheus_client installed, also a span and metrics. A failing sink
never blocks sync: it is reported once per outage (see :mod:`datafn_audit.sinks`).
"""

from __future__ import annotations

from datafn_audit.record import build_record, failure_record
from datafn_audit.settings import AuditSettings
from datafn_audit.sinks import AuditSinkFailed, AuditTrail, FileSink, FunctionSink, LoggerSink

__all__ = [
    "AuditSettings",
    "AuditSinkFailed",
    "AuditTrail",
    "FileSink",
    "FunctionSink",
    "LoggerSink",
    "build_record",
    "failure_record",
]
