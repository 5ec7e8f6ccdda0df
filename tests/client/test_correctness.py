"""Regression tests of lost, doubled and overwritten writes, against the real server code.

Each test is a sequence a user runs (or a fault the network causes) that once lost a write,
applied one twice or left a client diverged for good. The server is the real ASGI app
in-process, so idempotency, guards and validation are the server's own; a small httpx
transport in front of it can lose an answer after the server has committed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from datafn import (
    Client,
    Conflict,
    ProtocolError,
    SchemaMismatch,
    TransportError,
    Veto,
    hookimpl,
)
from datafn.events import Event
from tests.client.conftest import SCHEMA, hosted
from tests.client.real_server import Network, Server, serving

REMOTE = "http://datafn.test/datafn"


@pytest.fixture
async def server(store_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    async with serving(store_url, tmp_path) as found:
        yield found


def record_events(client: Client, name: str) -> list[Event]:
    seen: list[Event] = []
    client.events.on(name, seen.append)
    return seen


# -- 1. a push before the first clone ------------------------------------------------------


async def test_a_push_before_the_first_clone_never_overwrites_a_newer_write(
    server: Server,
) -> None:
    async with hosted(server.client("x")) as x, hosted(server.client("y")) as y:
        await x.table("todos").insert({"id": "t1", "title": "x's first title"})
        await x.sync.push()  # never cloned: what a started engine does when the clone failed
        await y.sync.clone()
        await y.table("todos").merge({"id": "t1", "title": "y's newer title"})
        await y.sync.push()
        await x.sync.sync_all()
        await y.sync.pull()
        assert (await server.record("t1"))["title"] == "y's newer title"
        assert (await y.table("todos").get("t1"))["title"] == "y's newer title"  # type: ignore[index]
        assert await x.table("todos").get("t1") == await server.record("t1")
        assert len(await server.changes("t1")) == 2  # x's insert once, y's merge once
        sent = [m for e, p in server.network.requests if e == "push" for m in p["mutations"]]
        assert not [m for m in sent if m["mutationId"].startswith("cloneup:")]


async def test_an_offline_guarded_write_keeps_its_guard_when_first_synced(
    server: Server,
) -> None:
    async with hosted(server.client("y")) as y:
        await y.table("todos").insert({"id": "t1", "title": "on the server"})
        await y.sync.push()
    async with hosted(server.client("x")) as x:
        rejected = record_events(x, "mutation_rejected")
        # written offline by a client that never synced, guarded on a value the server lacks
        await x.table("todos").merge({"id": "t1", "title": "mine"}, guard={"title": "stale"})
        await x.sync.sync_all()
        assert (await server.record("t1"))["title"] == "on the server"
        assert [e.context.error.code for e in rejected] == ["CONFLICT"]
        assert await x.table("todos").get("t1") == await server.record("t1")
        assert await x.store.pending_count() == 0


# -- 2. a lost push answer ------------------------------------------------------------------


async def test_a_lost_push_answer_never_leaves_the_client_diverged(server: Server) -> None:
    async with (
        hosted(server.client("a", push_max_retries=0)) as a,
        hosted(server.client("b")) as b,
    ):
        await a.sync.clone()
        await b.sync.clone()
        await a.table("todos").insert({"id": "t1", "title": "a's title", "done": False})
        server.network.lose_answer("a", "push")
        with pytest.raises(TransportError):
            await a.sync.push()  # the server applied it; a never heard
        await b.sync.pull()
        await b.table("todos").merge({"id": "t1", "title": "b's title"})
        await b.sync.push()
        await a.sync.pull()  # pushes first: the replay answers "applied", then pulls
        await a.sync.push()
        await a.sync.pull()
        assert await a.table("todos").get("t1") == await server.record("t1")
        assert (await server.record("t1"))["title"] == "b's title"
        assert await a.store.pending_count() == 0
        assert len(await server.changes("t1")) == 2


async def test_a_lost_push_answer_then_a_restart_converges(server: Server, store_url: str) -> None:
    if not store_url.startswith("sqlite"):
        pytest.skip("a restart needs a store that outlives the client")
    async with hosted(server.client("b")) as b:
        await b.sync.clone()
        async with hosted(server.client("a", push_max_retries=0)) as a:
            await a.sync.clone()
            await a.table("todos").insert({"id": "t1", "title": "a's title"})
            server.network.lose_answer("a", "push")
            with pytest.raises(TransportError):
                await a.sync.push()
        await b.sync.pull()
        await b.table("todos").merge({"id": "t1", "title": "b's title"})
        await b.sync.push()
    async with hosted(server.client("a")) as a:
        await a.sync.sync_all()  # what start() runs: a pull first, which pushes first now
        assert await a.table("todos").get("t1") == await server.record("t1")
        assert (await server.record("t1"))["title"] == "b's title"


# -- 3. a write made while cloneUp runs -----------------------------------------------------


class WriteDuringUpload:
    """Makes one local write the first time a push of cloneUp's is about to be sent."""

    def __init__(self) -> None:
        self.client: Client | None = None
        self.done = False

    @hookimpl
    async def datafn_before_sync(self, phase: str, payload: Any) -> Any:
        if phase in ("clone_up", "push") and not self.done and self.client is not None:
            self.done = True
            await self.client.table("todos").merge({"id": "t7", "title": "written meanwhile"})
        return None


async def test_a_write_made_while_clone_up_runs_is_applied_once(server: Server) -> None:
    plugin = WriteDuringUpload()
    async with hosted(server.client("x", plugins=[plugin], push_batch_size=3)) as x:
        for i in range(9):
            await x.table("todos").insert({"id": f"t{i}", "title": f"offline {i}"})
        async with hosted(server.client("y")) as y:
            await y.sync.clone()
            plugin.client = x
            await x.sync.sync_all()
            assert plugin.done
            await x.sync.sync_all()
            await y.sync.pull()
            await y.table("todos").delete("t7")
            await y.sync.push()
            await x.sync.pull()
            changes = [c.data for c in await server.changes("t7")]
            meanwhile = [d for d in changes if d and d.get("title") == "written meanwhile"]
            assert len(meanwhile) == 1, changes
            assert await server.record("t7") is None
            assert await x.table("todos").get("t7") is None  # deleted, and it stays deleted
            assert await x.store.pending_count() == 0


# -- 4. a pull on a client that never cloned ------------------------------------------------


async def test_pull_on_a_client_that_never_cloned_hydrates_first(server: Server) -> None:
    async with hosted(server.client("y")) as y:
        await y.table("todos").insert({"id": "y1", "title": "someone else's"})
        await y.sync.push()
    async with hosted(server.client("x")) as x:
        await x.table("todos").insert({"id": "x1", "title": "mine"})
        await x.sync.push()
        report = await x.sync.pull()
        assert report.requests >= 1
        assert await x.table("todos").get("y1") == await server.record("y1")
        assert (await x.sync.status()).hydration["todos"] == "ready"


# -- 6. a refused write never blocks the queue ----------------------------------------------


class RefuseForbiddenTitles:
    @hookimpl
    def datafn_before_sync(self, phase: str, payload: Any) -> Any:
        if phase == "push":
            for mutation in payload["mutations"]:
                if (mutation.get("record") or {}).get("title") == "forbidden":
                    return Veto("this title is not allowed", code="FORBIDDEN")
        return None


async def test_a_write_a_policy_refuses_becomes_a_dead_letter_and_the_queue_moves_on(
    server: Server,
) -> None:
    async with hosted(server.client("x", plugins=[RefuseForbiddenTitles()])) as x:
        await x.sync.clone()
        rejected = record_events(x, "mutation_rejected")
        await x.table("todos").insert({"id": "t1", "title": "fine"})
        await x.table("todos").insert({"id": "t2", "title": "forbidden"})
        await x.table("todos").insert({"id": "t3", "title": "fine too"})
        report = await x.sync.push()
        assert [d.record_id for d in report.dead] == ["t2"]
        assert [e.context.record_id for e in rejected] == ["t2"]
        assert await server.record("t1") is not None and await server.record("t3") is not None
        assert await server.record("t2") is None
        assert await x.table("todos").get("t2") is None  # taken out of the local view
        pending = await x.sync.pending()
        assert [(p.record_id, p.state) for p in pending] == [("t2", "dead")]
        assert "not allowed" in (pending[0].last_error or "")
        status = await x.sync.status()
        assert (status.pending_changes, status.dead_letters) == (0, 1)
        await x.table("todos").insert({"id": "t4", "title": "later"})
        await x.sync.push()  # nothing blocks the writes behind a dead letter
        assert await server.record("t4") is not None
        removed = await x.sync.discard(pending[0].mutation_id)
        assert removed.record_id == "t2"
        assert await x.sync.pending() == []
        with pytest.raises(KeyError):
            await x.sync.discard(pending[0].mutation_id)


async def test_a_policy_that_refuses_every_push_keeps_every_write_queued(
    server: Server,
) -> None:
    class Frozen:
        @hookimpl
        def datafn_before_sync(self, phase: str) -> Any:
            return Veto("pushes are frozen") if phase == "push" else None

    async with hosted(server.client("x", plugins=[Frozen()])) as x:
        await x.sync.clone()
        for i in range(3):
            await x.table("todos").insert({"id": f"t{i}", "title": str(i)})
        with pytest.raises(Exception, match="frozen"):
            await x.sync.push()
        assert [(p.record_id, p.state) for p in await x.sync.pending()] == [
            ("t0", "queued"),
            ("t1", "queued"),
            ("t2", "queued"),
        ]


async def test_discard_restores_the_servers_last_known_state_without_a_request(
    server: Server,
) -> None:
    async with hosted(server.client("y")) as y:
        await y.table("todos").insert({"id": "t1", "title": "server's"})
        await y.sync.push()
    async with hosted(server.client("x")) as x:
        await x.sync.sync_all()
        await x.table("todos").merge({"id": "t1", "title": "mine"})
        await x.table("todos").merge({"id": "t1", "done": True})
        queued = await x.sync.pending()
        assert [p.operation for p in queued] == ["merge", "merge"]
        sent = len(server.network.requests)
        await x.sync.discard(queued[0].mutation_id)
        assert len(server.network.requests) == sent
        assert await x.table("todos").get("t1") == {
            "id": "t1",
            "title": "server's",
            "done": True,
        }
        await x.sync.push()
        assert (await server.record("t1"))["title"] == "server's"
        assert (await server.record("t1"))["done"] is True


# -- 7. a schema change ---------------------------------------------------------------------


def schema_with(**changes: Any) -> dict[str, Any]:
    todos = dict(SCHEMA["resources"][0])
    fields = [f for f in todos["fields"] if f["name"] not in changes.get("drop", ())]
    fields += changes.get("add", [])
    todos["fields"] = fields
    return {"resources": [todos, *SCHEMA["resources"][1:]]}


@contextlib.asynccontextmanager
async def moved_to(server: Server, schema: Any) -> AsyncIterator[None]:
    """The server restarted on ``schema`` with the same data."""
    app = server._app(schema)
    async with app.router.lifespan_context(app):
        server.network.asgi = httpx.ASGITransport(app=app)
        yield


async def test_an_incompatible_schema_change_keeps_offline_writes_queued(
    server: Server,
) -> None:
    async with hosted(server.client("old")) as old:
        await old.sync.sync_all()
        failed = record_events(old, "sync_failed")
        rejected = record_events(old, "mutation_rejected")
        await old.table("todos").insert({"id": "t1", "title": "offline", "priority": 2})
        async with moved_to(server, schema_with(drop=["priority"])):
            with pytest.raises(SchemaMismatch) as info:
                await old.sync.push()  # checked before, and again when refused as invalid
            status = await old.sync.status()
            assert status.last_error is info.value
            assert failed and failed[-1].context.error.code == "SCHEMA_MISMATCH"
            assert "todos.priority" in str(info.value)
            assert rejected == []
            assert status.pending_changes == 1
            with pytest.raises(SchemaMismatch):
                await old.sync.sync_all()
            assert await old.store.pending_count() == 1
            assert await server.record("t1") is None


async def test_a_compatible_addition_syncs_on(server: Server) -> None:
    added = {"name": "color", "type": "string"}
    async with moved_to(server, schema_with(add=[added])):
        async with hosted(server.client("new", schema=schema_with(add=[added]))) as new:
            await new.table("todos").insert({"id": "t1", "title": "new", "color": "red"})
            await new.sync.sync_all()
        async with hosted(server.client("old")) as old:
            await old.sync.sync_all()
            assert (await old.table("todos").get("t1"))["color"] == "red"  # type: ignore[index]
            await old.table("todos").merge({"id": "t1", "done": True})
            await old.sync.push()
            stored = await server.record("t1")
            assert (stored["color"], stored["done"]) == ("red", True)
            assert await old.table("todos").get("t1") == stored


async def test_a_client_that_requires_a_field_the_server_lacks_syncs_nothing(
    server: Server,
) -> None:
    required = {"name": "owner", "type": "string", "required": True}
    async with hosted(server.client("y")) as y:
        await y.table("todos").insert({"id": "t1", "title": "no owner"})
        await y.sync.push()
    async with hosted(server.client("new", schema=schema_with(add=[required]))) as new:
        with pytest.raises(SchemaMismatch, match=r"todos\.owner"):
            await new.sync.sync_all()
        assert await new.table("todos").count() == 0


# -- refusals that are not about a write ----------------------------------------------------


class Throttled(Network):
    """Answers the next ``n`` pushes with the server's rate-limit envelope (429)."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.n = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/push") and self.n > 0:
            self.n -= 1
            error = {"code": "LIMIT_EXCEEDED", "message": "too many requests", "details": {}}
            body = orjson.dumps({"ok": False, "error": error})
            return httpx.Response(429, content=body, headers={"content-type": "application/json"})
        return await super().handle_async_request(request)


@pytest.mark.parametrize("throttled", [1, 2, 4])
async def test_a_throttled_push_never_turns_writes_into_dead_letters(
    server: Server, throttled: int
) -> None:
    network = server.network = Throttled(server.app)
    async with hosted(server.client("a", push_max_retries=0)) as a:
        await a.sync.clone()
        for i in range(3):
            await a.table("todos").insert({"id": f"t{i}", "title": str(i)})
        network.n = throttled  # the batch, then some of the writes alone
        for _ in range(throttled + 1):  # pushes fail while throttled, then go through
            with contextlib.suppress(ProtocolError):
                await a.sync.push()
            assert await a.store.dead_letters() == []
        assert network.n == 0
        for i in range(3):
            assert await server.record(f"t{i}") is not None
        assert await a.sync.pending() == []


class Poison(Network):
    """The server fails with INTERNAL (500) on any push holding the record ``bad``."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/push") and any(
            m.get("id") == "bad" for m in orjson.loads(request.read())["mutations"]
        ):
            error = {"code": "INTERNAL", "message": "boom", "details": {}}
            body = orjson.dumps({"ok": False, "error": error})
            return httpx.Response(500, content=body, headers={"content-type": "application/json"})
        return await super().handle_async_request(request)


async def test_a_push_the_server_fails_every_time_never_stops_pulls(server: Server) -> None:
    server.network = Poison(server.app)
    async with (
        hosted(server.client("a", push_max_retries=0)) as a,
        hosted(server.client("b")) as b,
    ):
        await a.sync.clone()
        await b.sync.clone()
        await a.table("todos").insert({"id": "bad", "title": "x"})
        with pytest.raises(ProtocolError):
            await a.sync.push()
        await b.table("todos").insert({"id": "other", "title": "from b"})
        await b.sync.push()
        await a.sync.pull()  # an error answer means nothing was applied: not in doubt
        assert await a.table("todos").get("other") is not None
        (stuck,) = await a.sync.pending()
        assert stuck.attempts == 1 and "INTERNAL" in (stuck.last_error or "")
        await a.sync.discard(stuck.mutation_id)  # the way out
        await a.sync.push()
        assert await a.table("todos").get("bad") is None and await server.record("bad") is None


async def test_discard_waits_until_a_push_in_doubt_is_settled(server: Server) -> None:
    async with hosted(server.client("a", push_max_retries=0)) as a:
        await a.sync.clone()
        await a.table("todos").insert({"id": "t1", "title": "sent"})
        server.network.lose_answer("a", "push")
        with pytest.raises(TransportError):
            await a.sync.push()  # the server applied it
        (entry,) = await a.sync.pending()
        with pytest.raises(Conflict):
            await a.sync.discard(entry.mutation_id)
        await a.sync.push()  # the replay settles it: applied
        assert await a.sync.pending() == []
        assert await a.table("todos").get("t1") == await server.record("t1")


async def test_an_older_files_queued_write_takes_no_guessed_base(
    server: Server, store_url: str, tmp_path: Path
) -> None:
    """A write queued by a store that kept no bases: a merge pulled for its record is applied
    to the local view (the only guess), which must not become the record's base."""
    if not store_url.startswith("sqlite"):
        pytest.skip("an SQLite file of the layout before bases")
    import sqlite3

    async with hosted(server.client("a")) as a, hosted(server.client("b")) as b:
        await b.sync.clone()
        await b.table("todos").insert({"id": "x", "title": "orig", "done": False})
        await b.sync.push()
        await a.sync.clone()
        await a.table("todos").merge({"id": "x", "title": "mine"}, guard={"done": False})
        db = sqlite3.connect(tmp_path / "a.db")
        try:
            db.execute("UPDATE _datafn_changelog SET base = NULL, base_known = 0")
            db.commit()
        finally:
            db.close()
        await b.sync.pull()
        await b.table("todos").merge({"id": "x", "done": True})
        await b.sync.push()
        await a.sync.pull()
        report = await a.sync.push()  # the guard fails now
        assert [r.error.code for r in report.rejected] == ["CONFLICT"]
        await a.sync.sync_all()
        assert await a.table("todos").get("x") == await server.record("x")
        assert (await server.record("x"))["title"] == "orig"


async def test_records_put_into_the_store_go_up_before_a_first_push_marks_them_for_a_clone(
    server: Server,
) -> None:
    async with hosted(server.client("x")) as x:
        await x.table("todos").insert({"id": "imported", "title": "from an import"})
        await x.store.acknowledge([e.seq for e in await x.store.changelog()])  # no queued write
        await x.table("todos").insert({"id": "t1", "title": "written"})
        await x.sync.push()  # before any sync: the resource is marked for a clone
        await x.sync.sync_all()
        assert await x.table("todos").get("imported") == await server.record("imported")
        assert await server.record("imported") is not None
