"""The audit plugin: the hook implementations, registered as the ``audit`` entry point.

- ``datafn_after_sync`` (fail-open, ``tryfirst``) writes one record per completed sync
  operation, on both sides.
- ``datafn_before_sync`` (``tryfirst``) only notes when the operation started, so that the
  record can say how long it took. It is a fail-closed hook, so it never raises and never
  returns anything: a broken audit can not stop a sync.
- ``datafn_on_event`` records client operations that did not complete (``sync_failed``),
  with the error, and the plugin and rule that vetoed it.

The duration runs from this plugin's before-sync call — the first — to its after-sync call —
the first too: it covers the other policies, the request (client) or the execution (server),
and not the other observers. The start is matched to the end by the identity of the
:class:`~datafn.context.SyncContext` object, which the kernel passes to both hooks of one
operation; starts whose operation never completed are forgotten once the context is gone.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from datafn import Config, ConfigError, Event, SyncContext, hookimpl
from datafn.config import SettingsRegistry
from datafn_audit.record import build_record, failure_record
from datafn_audit.settings import AuditSettings
from datafn_audit.sinks import AuditTrail, FileSink, FunctionSink, LoggerSink, Sink
from datafn_audit.telemetry import Telemetry

__all__ = [
    "Audit",
    "current",
    "datafn_add_settings",
    "datafn_after_sync",
    "datafn_before_sync",
    "datafn_configure",
    "datafn_on_event",
]

log = logging.getLogger("datafn_audit")

SECTION = "audit"
_MAX_STARTS = 4096


class _Starts:
    """Start times of operations in flight, keyed by their SyncContext object."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: dict[int, tuple[weakref.ref[SyncContext], float, int]] = {}

    def start(self, context: SyncContext) -> None:
        entry = (weakref.ref(context), time.perf_counter(), time.time_ns())
        with self._lock:
            if len(self._starts) >= _MAX_STARTS:
                self._starts = {k: v for k, v in self._starts.items() if v[0]() is not None}
                while len(self._starts) >= _MAX_STARTS:
                    del self._starts[next(iter(self._starts))]
            self._starts[id(context)] = entry

    def stop(self, context: SyncContext) -> tuple[float | None, int | None]:
        with self._lock:
            entry = self._starts.pop(id(context), None)
        if entry is None or entry[0]() is not context:
            return None, None
        return time.perf_counter() - entry[1], entry[2]

    def __len__(self) -> int:
        return len(self._starts)


class Audit:
    """The configured audit: settings, the trail with its sink, telemetry."""

    def __init__(self, settings: AuditSettings, trail: AuditTrail, telemetry: Telemetry) -> None:
        self.settings = settings
        self.trail = trail
        self.telemetry = telemetry
        self.starts = _Starts()

    def wants(self, side: str) -> bool:
        return self.settings.enabled and side in self.settings.sides

    def emit(self, record: dict[str, Any], started_ns: int | None) -> None:
        self.telemetry.record(record, started_ns)
        self.trail.write(record)


#: The plugin is a module, shared by every runtime of the process: the configuration booted
#: last applies.
_current: Audit | None = None


def current() -> Audit | None:
    """The audit configured last (None before any runtime booted with this plugin)."""
    return _current


@hookimpl
def datafn_add_settings(settings: SettingsRegistry) -> None:
    settings.add(SECTION, AuditSettings)


@hookimpl
def datafn_configure(config: Config) -> None:
    global _current
    settings: AuditSettings = config.section(SECTION)
    project_dir = config.pyproject.parent if config.pyproject else Path.cwd()
    sink = _sink(settings, project_dir)
    telemetry = Telemetry(tracing=settings.tracing, metrics=settings.metrics)
    trail = AuditTrail(sink, backlog=settings.backlog)
    previous, _current = _current, Audit(settings, trail, telemetry)
    if previous is not None:
        previous.trail.close()


@hookimpl(tryfirst=True)
def datafn_before_sync(context: SyncContext) -> None:
    try:
        audit = _current
        if audit is not None and audit.wants(context.side):
            audit.starts.start(context)
    except Exception:  # fail-closed hook: an audit problem must never veto a sync
        log.debug("could not note the start of a sync operation", exc_info=True)


@hookimpl(tryfirst=True)
def datafn_after_sync(phase: str, payload: Any, result: Any, context: SyncContext) -> None:
    audit = _current
    if audit is None or not audit.wants(context.side):
        return
    duration, started_ns = audit.starts.stop(context)
    audit.emit(build_record(phase, payload, result, context, duration), started_ns)


@hookimpl
def datafn_on_event(event: Event) -> None:
    if event.name != "sync_failed":
        return
    audit = _current
    if audit is None or not audit.wants("client"):
        return
    context = SyncContext(side="client", resources=tuple(event.context.resources))
    record = failure_record(event.context.phase or "?", context, event.context.error)
    audit.emit(record, None)


def _sink(settings: AuditSettings, project_dir: Path) -> Sink:
    if settings.sink == "file":
        path = Path(settings.path)
        if not path.is_absolute():
            path = project_dir / path
        return FileSink(path, max_bytes=settings.max_bytes, backup_count=settings.backup_count)
    if settings.sink == "logger":
        return LoggerSink(settings.logger, settings.level)
    module_name, sep, attr = settings.sink.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"expected 'logger', 'file' or 'package.module:function', got {settings.sink!r}",
            key="tool.datafn.audit.sink",
        )
    import importlib
    import sys

    if str(project_dir) not in sys.path:
        sys.path.append(str(project_dir))
    try:
        function: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            function = getattr(function, part)
    except Exception as exc:
        raise ConfigError(
            f"cannot load {settings.sink!r}: {type(exc).__name__}: {exc}",
            key="tool.datafn.audit.sink",
        ) from exc
    if not callable(function):
        raise ConfigError(f"{settings.sink!r} is not callable", key="tool.datafn.audit.sink")
    return FunctionSink(settings.sink, function)
