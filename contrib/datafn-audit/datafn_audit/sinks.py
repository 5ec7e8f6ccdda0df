"""Where audit records go, and how a failing sink is kept from blocking or flooding anything.

:class:`AuditTrail` owns one sink. When the sink raises, the trail raises
:class:`AuditSinkFailed` once — the kernel logs it and reports it as a ``plugin_error``
event, like any failing fail-open hook — and then keeps the records of the outage in a
bounded backlog, silently, trying the sink again on every new record. When a write succeeds
the backlog is written first (oldest first), recovery is logged with the number of records
dropped, and a later outage is reported again.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import orjson

__all__ = ["AuditSinkFailed", "AuditTrail", "FileSink", "FunctionSink", "LoggerSink", "Sink"]

log = logging.getLogger("datafn_audit")


class AuditSinkFailed(RuntimeError):
    """The audit sink failed; reported once per outage."""


class Sink(Protocol):
    """Receives audit records; may raise."""

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def encode(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, default=str)


class FileSink:
    """Appends JSON lines to a file, rotating it at ``max_bytes`` like logging's
    RotatingFileHandler (``name.1`` is the newest backup), but raising on failure instead of
    printing to stderr, so that the trail can tell a failing sink."""

    def __init__(self, path: Path, *, max_bytes: int, backup_count: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self._file: Any = None

    def __repr__(self) -> str:
        return f"file {str(self.path)!r}"

    def write(self, record: dict[str, Any]) -> None:
        line = encode(record) + b"\n"
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "ab")  # noqa: SIM115 - kept open between writes
            size = self._file.tell()
            if self.max_bytes and size > 0 and size + len(line) > self.max_bytes:
                self._rotate()
            self._file.write(line)
            self._file.flush()
        except BaseException:
            self.close()
            raise

    def _rotate(self) -> None:
        self.close()
        if self.backup_count > 0:
            for index in range(self.backup_count - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()


class LoggerSink:
    """Logs each record as one JSON line on a stdlib logger."""

    def __init__(self, name: str, level: str) -> None:
        self.logger = logging.getLogger(name)
        self.level = logging.getLevelName(level)

    def __repr__(self) -> str:
        return f"logger {self.logger.name!r}"

    def write(self, record: dict[str, Any]) -> None:
        self.logger.log(self.level, "%s", encode(record).decode())

    def close(self) -> None:
        pass


class FunctionSink:
    """Calls a function of yours with each record (a dict)."""

    def __init__(self, name: str, function: Callable[[dict[str, Any]], Any]) -> None:
        self.name = name
        self.function = function

    def __repr__(self) -> str:
        return f"function {self.name!r}"

    def write(self, record: dict[str, Any]) -> None:
        self.function(record)

    def close(self) -> None:
        pass


class AuditTrail:
    """One sink, its backlog during an outage, and the report-once bookkeeping.

    Thread-safe: an in-process server runs its hooks in another thread than the client.
    """

    def __init__(self, sink: Sink, *, backlog: int) -> None:
        self.sink = sink
        self.failing = False
        self.dropped = 0
        self.reports = 0
        self._backlog: collections.deque[dict[str, Any]] = collections.deque(maxlen=backlog)
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        with self._lock:
            if not self.failing:
                try:
                    self.sink.write(record)
                except Exception as exc:
                    self.failing = True
                    self._keep(record)
                    self.reports += 1
                    raise AuditSinkFailed(
                        f"audit sink {self.sink!r} failed: {type(exc).__name__}: {exc}; "
                        f"records are kept (up to {self._backlog.maxlen}) and the sink is "
                        "retried with every new record; this is reported once per outage"
                    ) from exc
                return
            self._keep(record)
            try:
                while self._backlog:
                    self.sink.write(self._backlog[0])
                    self._backlog.popleft()
            except Exception:
                return  # still failing: already reported
            self.failing = False
            log.warning(
                "audit sink %r recovered; %d record(s) of the outage were dropped",
                self.sink,
                self.dropped,
            )
            self.dropped = 0

    def _keep(self, record: dict[str, Any]) -> None:
        if self._backlog.maxlen == 0:
            self.dropped += 1
            return
        if len(self._backlog) == self._backlog.maxlen:
            self.dropped += 1
        self._backlog.append(record)

    @property
    def pending(self) -> int:
        """Records of the current outage not written yet."""
        return len(self._backlog)

    def close(self) -> None:
        with self._lock:
            self.sink.close()
