"""End to end: clients on SQLite files against a real server process (``datafn serve``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from datafn import Client, SchemaMismatch, SyncVetoed, TransportError, Veto, hookimpl
from datafn.events import Event
from tests.client.conftest import SCHEMA
from tests.client.server_process import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path / "server", SCHEMA) as process:
        yield process


def client(remote: str, path: Path, name: str, **kwargs: Any) -> Client:
    return Client(
        schema=SCHEMA,
        remote=remote,
        store=f"sqlite:///{path / (name + '.db')}",
        client_id=name,
        use_env=False,
        **kwargs,
    )


async def local_records(c: Client, resource: str = "todos") -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in await c.table(resource).query()}


async def eventually(check: Any, limit: float = 10.0) -> None:
    """Poll an async predicate until it holds (state changes in other tasks and processes)."""
    with anyio.fail_after(limit):
        while not await check():  # noqa: ASYNC110
            await anyio.sleep(0.05)


async def test_offline_writes_survive_a_restart_and_are_pushed(
    server: ServerProcess, tmp_path: Path
) -> None:
    async with client(server.remote, tmp_path, "a") as a:
        await a.sync.sync_all()
    server.stop()
    seen: list[Event] = []
    async with client(server.remote, tmp_path, "a", push_max_retries=0) as a:
        a.events.on("connectivity_changed", seen.append)
        for i in range(3):
            await a.table("todos").insert({"id": f"t{i}", "title": f"offline {i}"})
        await a.table("todos").merge({"id": "t0", "done": True})
        with pytest.raises(TransportError):
            await a.sync.push()
        status = await a.sync.status()
        assert (status.online, status.pending_changes, status.state) == (False, 4, "offline")
        assert [e.context.online for e in seen] == [False]
    server.start()
    async with client(server.remote, tmp_path, "a") as a:  # the client process restarted
        assert (await a.sync.status()).pending_changes == 4
        report = await a.sync.push()
        assert report.applied == 4
        assert (await a.sync.status()).pending_changes == 0
        assert server.records("todos") == await local_records(a)
        assert server.records("todos")["t0"]["done"] is True


async def test_two_clients_converge(server: ServerProcess, tmp_path: Path) -> None:
    async with (
        client(server.remote, tmp_path, "a", push_debounce=0.01) as a,
        client(server.remote, tmp_path, "b", push_debounce=0.01) as b,
    ):
        await a.sync.start()
        await b.sync.start()
        for i in range(5):
            await a.table("todos").insert({"id": f"a{i}", "title": f"from a {i}"})
            await b.table("todos").insert({"id": f"b{i}", "title": f"from b {i}"})
        await b.table("notes").insert({"id": "n1", "body": "hello"})

        async def pushed() -> bool:
            return all([(await c.sync.status()).pending_changes == 0 for c in (a, b)])

        await eventually(pushed)
        for c in (a, b):
            await c.sync.notify("focus")  # what a GUI does when its window is focused

        async def converged() -> bool:
            server_todos = server.records("todos")
            return (
                len(server_todos) == 10
                and await local_records(a) == server_todos
                and await local_records(b) == server_todos
                and await local_records(a, "notes") == server.records("notes")
            )

        await eventually(converged)


async def test_guarded_conflict_is_reported_with_the_servers_error(
    server: ServerProcess, tmp_path: Path
) -> None:
    async with (
        client(server.remote, tmp_path, "a") as a,
        client(server.remote, tmp_path, "b") as b,
    ):
        await a.table("todos").insert({"id": "t1", "title": "draft"})
        await a.sync.sync_all()
        await b.sync.sync_all()
        await b.table("todos").merge({"id": "t1", "title": "b's title"})
        await b.sync.push()
        rejected: list[Event] = []
        a.events.on("mutation_rejected", rejected.append)
        await a.table("todos").merge({"id": "t1", "title": "a's title"}, guard={"title": "draft"})
        report = await a.sync.push()
        assert len(report.rejected) == 1 and len(rejected) == 1
        error = rejected[0].context.error
        assert error.code == "CONFLICT" and error.path.startswith("if")
        assert "title" in error.message
        assert (await a.table("todos").get("t1"))["title"] == "b's title"  # type: ignore[index]
        assert (await a.sync.status()).pending_changes == 0


async def test_an_incompatible_server_schema_is_reported_through_sync_failed(
    server: ServerProcess, tmp_path: Path
) -> None:
    schema = {**SCHEMA, "resources": [*SCHEMA["resources"], {"name": "extra", "fields": []}]}
    failed: list[Event] = []
    async with Client(
        schema=schema, remote=server.remote, store=f"sqlite:///{tmp_path}/x.db", use_env=False
    ) as c:
        c.events.on("sync_failed", failed.append)
        with pytest.raises(SchemaMismatch) as info:
            await c.sync.clone(["extra"])
        status = await c.sync.status()
    assert failed and failed[0].context.error is info.value
    assert status.last_error is info.value
    assert info.value.code == "SCHEMA_MISMATCH"
    assert info.value.details["differences"] == ["the server has no resource 'extra'"]


class FreezePush:
    @hookimpl
    def datafn_before_sync(self, phase: str) -> Any:
        return Veto("pushes are frozen") if phase == "push" else None


class BrokenAudit:
    @hookimpl
    async def datafn_after_sync(self, phase: str, result: Any) -> None:
        raise RuntimeError("audit log is full")


async def test_before_sync_veto_aborts_and_after_sync_failure_does_not(
    server: ServerProcess, tmp_path: Path
) -> None:
    async with client(server.remote, tmp_path, "a", plugins=[FreezePush()]) as a:
        await a.table("todos").insert({"id": "t1", "title": "x"})
        with pytest.raises(SyncVetoed, match="pushes are frozen"):
            await a.sync.push()
        assert server.records("todos") == {}
        assert (await a.sync.status()).pending_changes == 1
    errors: list[Event] = []
    async with client(server.remote, tmp_path, "a", plugins=[BrokenAudit()]) as a:
        a.events.on("plugin_error", errors.append)
        report = await a.sync.push()
        assert report.applied == 1
        assert "t1" in server.records("todos")
        assert errors and "audit log is full" in str(errors[0].context.error)


async def test_clone_up_and_reconcile(server: ServerProcess, tmp_path: Path) -> None:
    async with Client(schema=SCHEMA, store=f"sqlite:///{tmp_path}/a.db", use_env=False) as a:
        for i in range(250):  # written with no server at all
            await a.table("todos").insert({"id": f"t{i:03}", "title": str(i)})
    async with client(server.remote, tmp_path, "a", push_batch_size=100) as a:
        await a.sync.sync_all()  # notices the offline-filled store: cloneUp, then clone
        assert len(server.records("todos")) == 250
        assert await local_records(a) == server.records("todos")
        changes = server.change_count()
        await a.store.reset_hydration("todos")
        await a.sync.clone_up(["todos"])  # a re-run changes nothing on the server
        assert server.change_count() == changes
        # drift: records vanish on the server without a change-log entry
        with sqlite3.connect(server.database_path) as db:
            db.execute("DELETE FROM datafn_records_todos WHERE id < 't010'")
        report = await a.sync.reconcile()
        # compared by content: only the ten records' range is fetched, nothing re-cloned
        assert report.method == "digest" and report.recloned == []
        assert report.repaired["todos"] == 10 and not report.repaired["notes"]
        assert report.local["todos"] == 250 and report.remote["todos"] == 240
        assert await local_records(a) == server.records("todos")


async def test_the_servers_copy_of_own_writes_comes_back_after_a_push(
    server: ServerProcess, tmp_path: Path
) -> None:
    async with client(server.remote, tmp_path, "a") as a:
        await a.sync.sync_all()
        # a merge that creates the record: the server fills the schema's defaults
        await a.table("todos").merge({"id": "m1", "title": "created by a merge"})
        assert "done" not in (await local_records(a))["m1"]
        await a.sync.push()
        assert (await local_records(a))["m1"]["done"] is False
