"""``[tool.datafn.audit]``: the typed settings of the audit plugin.

::

    [tool.datafn.audit]
    sink = "file"                  # "logger" (default), "file", or "package.module:function"
    path = "logs/datafn-audit.jsonl"   # file sink; relative to the pyproject.toml's folder
    max-bytes = 10_485_760         # rotate when the file reaches this size (0: never)
    backup-count = 5               # rotated files kept: datafn-audit.jsonl.1 … .5
    sides = ["client", "server"]   # which side's operations to record
    tracing = true                 # OpenTelemetry spans; unset: when opentelemetry is installed
    metrics = true                 # Prometheus metrics; unset: when prometheus_client is installed
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from datafn.config import PathSetting, Section

__all__ = ["AuditSettings"]


class AuditSettings(Section):
    """``[tool.datafn.audit]``: where the audit trail of sync operations goes."""

    enabled: bool = Field(True, description="false records nothing")
    sink: str = Field(
        "logger",
        description="'logger', 'file', or the import path of a function taking the record",
    )
    path: PathSetting = Field(
        "datafn-audit.jsonl",
        description="file sink; relative: to the pyproject.toml's folder (from the environment "
        "or a keyword argument: to the working directory)",
    )
    max_bytes: int = Field(10 * 1024 * 1024, ge=0, description="rotate at this size; 0: never")
    backup_count: int = Field(5, ge=0, le=1000, description="rotated files kept")
    logger: str = Field("datafn.audit", description="logger sink: the logger's name")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO")
    sides: list[Literal["client", "server"]] = Field(default_factory=lambda: ["client", "server"])
    backlog: int = Field(
        1000, ge=0, description="lines kept while the sink fails, written when it recovers"
    )
    tracing: bool | None = Field(None, description="OpenTelemetry spans; unset: if installed")
    metrics: bool | None = Field(None, description="Prometheus metrics; unset: if installed")
