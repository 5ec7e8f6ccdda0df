"""datafn-audit: one record per sync operation, the sinks, report-once on failure, telemetry."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from datafn import ConfigError, Runtime, SyncContext, SyncVetoed
from datafn.protocol import PullResult, PushResult
from datafn.testing.project import DatafnProject
from datafn_audit import plugin as audit_plugin
from datafn_audit.sinks import AuditSinkFailed, AuditTrail, FileSink

CLIENT = SyncContext(side="client", client_id="c1", resources=("todos",))
PUSH = {
    "clientId": "c1",
    "mutations": [
        {"resource": "todos", "operation": "insert", "id": f"t{i}", "mutationId": f"m{i}"}
        for i in range(3)
    ],
}
PUSH_RESULT = {
    "ok": False,
    "applied": ["m0", "m1"],
    "errors": [
        {"mutationId": "m2", "code": "CONFLICT", "message": "x", "path": "id", "retryable": False}
    ],
    "cursor": "12",
    "cursorBefore": "9",
    "cursors": {"todos": "12"},
}

RECORDS: list[dict[str, Any]] = []


def collect(record: dict[str, Any]) -> None:
    RECORDS.append(record)


def failing(record: dict[str, Any]) -> None:
    if FAILING:
        raise OSError("disk full")
    RECORDS.append(record)


FAILING = False


@pytest.fixture(autouse=True)
def _reset() -> None:
    global FAILING
    RECORDS.clear()
    FAILING = False


def boot(project: DatafnProject, table: str) -> Runtime:
    project.write("[tool.datafn.audit]\n" + table)
    return project.boot()


async def operation(runtime: Runtime, phase: str, payload: Any, result: Any, context=CLIENT):
    caller = runtime.plugins.caller
    payload = await caller.before_sync(phase, payload, context)
    failures: list[Any] = []
    await caller.after_sync(phase, payload, result, context, on_failure=failures.append)
    return failures


def test_audit_is_discovered_through_its_entry_point(datafn_project: DatafnProject) -> None:
    info = {p.name: p for p in boot(datafn_project, "").plugins.plugins()}["audit"]
    assert info.distribution == "datafn-audit"
    assert {"datafn_before_sync", "datafn_after_sync", "datafn_on_event"} <= set(info.hooks)


async def test_push_record_with_counts_cursors_duration_and_outcome(
    datafn_project: DatafnProject,
) -> None:
    runtime = boot(datafn_project, f'sink = "{__name__}:collect"\n')
    assert await operation(runtime, "push", PUSH, PushResult.from_wire(PUSH_RESULT)) == []
    (record,) = RECORDS
    assert record["phase"] == "push" and record["side"] == "client"
    assert record["client_id"] == "c1" and record["resources"] == ["todos"]
    assert record["counts"] == {"mutations": 3, "applied": 2, "errors": 1}
    assert record["cursors_before"] == {"$": "9"}
    assert record["cursors_after"] == {"$": "12", "todos": "12"}
    assert record["outcome"] == "partial"
    assert isinstance(record["duration"], float) and 0 <= record["duration"] < 5


async def test_pull_record_on_the_server_side(datafn_project: DatafnProject) -> None:
    runtime = boot(datafn_project, f'sink = "{__name__}:collect"\n')
    server = SyncContext(side="server", client_id="c1", namespace="user:1", resources=("todos",))
    result = {
        "records": {"todos": [{"id": "a"}, {"id": "b"}]},
        "merged": {"todos": [{"id": "c"}]},
        "deleted": {"todos": ["d"]},
        "cursors": {"todos": "57"},
        "hasMore": False,
    }
    await operation(runtime, "pull", {"cursors": {"todos": "42"}}, result, server)
    await operation(runtime, "pull", {"cursors": {"todos": "57"}}, PullResult.from_wire(result))
    server_record, client_record = RECORDS
    assert client_record["side"] == "client"
    assert server_record["namespace"] == "user:1" and server_record["side"] == "server"
    for record in RECORDS:
        assert record["counts"] == {"records": 2, "merged": 1, "deleted": 1}
        assert record["cursors_after"] == {"todos": "57"}
    assert server_record["cursors_before"] == {"todos": "42"}


async def test_sides_and_enabled_select_what_is_recorded(datafn_project: DatafnProject) -> None:
    runtime = boot(datafn_project, f'sink = "{__name__}:collect"\nsides = ["server"]\n')
    await operation(runtime, "reconcile", {}, {"counts": {"todos": 3}})
    assert RECORDS == []
    runtime = boot(datafn_project, f'sink = "{__name__}:collect"\nenabled = false\n')
    await operation(runtime, "reconcile", {}, {"counts": {"todos": 3}})
    assert RECORDS == []


async def test_file_sink_rotates(datafn_project: DatafnProject) -> None:
    runtime = boot(
        datafn_project,
        'sink = "file"\npath = "logs/audit.jsonl"\nmax-bytes = 600\nbackup-count = 2\n',
    )
    for _ in range(12):
        await operation(runtime, "reconcile", {}, {"counts": {"todos": 3}})
    logs = datafn_project.path / "logs"
    assert sorted(p.name for p in logs.iterdir()) == [
        "audit.jsonl",
        "audit.jsonl.1",
        "audit.jsonl.2",
    ]
    for path in logs.iterdir():
        assert path.stat().st_size <= 600
        for line in path.read_text().splitlines():
            assert json.loads(line)["counts"] == {"todos": 3}


async def test_logger_sink(datafn_project: DatafnProject, caplog: pytest.LogCaptureFixture) -> None:
    runtime = boot(datafn_project, 'sink = "logger"\nlogger = "myapp.audit"\nlevel = "WARNING"\n')
    with caplog.at_level(logging.WARNING, logger="myapp.audit"):
        await operation(runtime, "seed", {"data": {"todos": [{}, {}]}}, {"inserted": {"todos": 1}})
    (entry,) = [r for r in caplog.records if r.name == "myapp.audit"]
    assert json.loads(entry.getMessage())["counts"] == {"records": 2, "inserted": 1}


async def test_a_failing_sink_never_blocks_and_is_reported_once(
    datafn_project: DatafnProject, caplog: pytest.LogCaptureFixture
) -> None:
    global FAILING
    runtime = boot(datafn_project, f'sink = "{__name__}:failing"\nbacklog = 2\n')
    FAILING = True
    failures = []
    for _ in range(4):
        failures += await operation(runtime, "reconcile", {}, {"counts": {"todos": 1}})
    assert len(failures) == 1, "one report per outage, not one per call"
    assert failures[0].plugin == "audit" and "disk full" in str(failures[0].error)
    assert "reported once per outage" in str(failures[0].error)
    FAILING = False
    with caplog.at_level(logging.WARNING, logger="datafn_audit"):
        assert await operation(runtime, "reconcile", {}, {"counts": {"todos": 2}}) == []
    assert "recovered; 3 record(s) of the outage were dropped" in caplog.text
    assert [r["counts"]["todos"] for r in RECORDS] == [1, 2], "the backlog is written first"
    FAILING = True
    assert len(await operation(runtime, "reconcile", {}, {"counts": {"todos": 3}})) == 1


def test_file_sink_failure_is_raised_once(tmp_path: Path) -> None:
    trail = AuditTrail(FileSink(tmp_path, max_bytes=0, backup_count=0), backlog=10)
    with pytest.raises(AuditSinkFailed, match="IsADirectoryError"):
        trail.write({"a": 1})
    trail.write({"a": 2})
    assert trail.failing and trail.pending == 2 and trail.reports == 1


async def test_before_sync_never_vetoes(
    datafn_project: DatafnProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = boot(datafn_project, f'sink = "{__name__}:collect"\n')

    def broken(context: Any) -> None:
        raise RuntimeError("clock broke")

    current = audit_plugin.current()
    assert current is not None
    monkeypatch.setattr(current.starts, "start", broken)
    assert await operation(runtime, "reconcile", {}, {"counts": {}}) == []
    assert RECORDS[0]["duration"] is None


async def test_vetoed_operations_are_recorded_from_sync_failed(
    datafn_project: DatafnProject,
) -> None:
    from datafn import Veto
    from datafn.events import EventBus

    runtime = boot(datafn_project, f'sink = "{__name__}:collect"\n')
    bus = EventBus(hooks=runtime.plugins.caller)
    veto = Veto("rule 'x': no", code="FORBIDDEN")
    veto.rule = "x"  # type: ignore[attr-defined]
    error = SyncVetoed("push", "guard", veto.reason, veto=veto)
    await bus.emit("sync_failed", phase="push", resources=["todos"], error=error)
    (record,) = RECORDS
    assert record["outcome"] == "vetoed" and record["plugin"] == "guard" and record["rule"] == "x"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('sink = "nowhere"', "expected 'logger', 'file'"),
        ('sink = "no_such_module_y:f"', "cannot load"),
        ('level = "LOUD"', "expected"),
    ],
)
def test_bad_settings_name_the_key(datafn_project: DatafnProject, table: str, message: str):
    with pytest.raises(ConfigError) as info:
        boot(datafn_project, table)
    assert info.value.key is not None and info.value.key.startswith("tool.datafn.audit.")
    assert message in str(info.value)


async def test_opentelemetry_span_and_prometheus_metrics(datafn_project: DatafnProject) -> None:
    pytest.importorskip("opentelemetry.sdk")
    prometheus = pytest.importorskip("prometheus_client")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    labels = {"phase": "push", "side": "client", "outcome": "partial"}
    before = prometheus.REGISTRY.get_sample_value("datafn_sync_operations_total", labels) or 0
    runtime = boot(datafn_project, f'sink = "{__name__}:collect"\ntracing = true\nmetrics = true\n')
    await operation(runtime, "push", PUSH, PUSH_RESULT)
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "datafn.push"]
    assert span.attributes["datafn.outcome"] == "partial"
    assert span.attributes["datafn.count.applied"] == 2
    assert span.end_time >= span.start_time
    after = prometheus.REGISTRY.get_sample_value("datafn_sync_operations_total", labels)
    assert after == before + 1
    count = prometheus.REGISTRY.get_sample_value(
        "datafn_sync_duration_seconds_count", {"phase": "push", "side": "client"}
    )
    assert count and count >= 1
