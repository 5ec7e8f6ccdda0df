"""Conflicts the application can see (docs/concepts.md, "Conflicts"): two clients write the
same field of one record without seeing each other's change, through the real server app on
each server store (memory, SQLite, PostgreSQL); the clients run on the memory and SQLite
client stores."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from datafn import Client, hookimpl
from datafn.builtins.client_http import HttpTransport
from datafn.events import ConflictEvent
from datafn.runtime import Runtime
from datafn.server import create_app
from tests.client.conftest import SCHEMA, hosted

REMOTE = "http://datafn.test/datafn"


class Served:
    """The real server app on a store, configured by ``conflicts``; clients wired to it."""

    def __init__(self, app: Any, tmp_path: Path, store_url: str) -> None:
        self.app = app
        self.tmp_path = tmp_path
        self.store_url = store_url
        self.transport = httpx.ASGITransport(app=app)

    def client(self, name: str) -> Client:
        store = self.store_url
        if store.startswith("sqlite"):
            store = f"sqlite:///{self.tmp_path}/{name}.db"
        return Client(
            store=store,
            client_id=name,
            schema=SCHEMA,
            transport=HttpTransport(REMOTE, transport=self.transport),
            use_env=False,
            sync={"reconcile_on_start": False},
        )

    async def post(self, endpoint: str, body: dict[str, Any]) -> Any:
        async with httpx.AsyncClient(transport=self.transport, base_url=REMOTE) as http:
            answer = (await http.post(f"{REMOTE}/{endpoint}", json=body)).json()
        return answer["result"] if answer.get("ok") else answer


@contextlib.asynccontextmanager
async def served(
    tmp_path: Path,
    server_store: str,
    store_url: str,
    conflicts: str = "",
    plugins: tuple[object, ...] = (),
) -> AsyncIterator[Served]:
    pyproject = tmp_path / "server-pyproject.toml"
    pyproject.write_text(
        f'[project]\nname = "t"\n\n[tool.datafn.server.conflicts]\n{conflicts}\n',
        encoding="utf-8",
    )
    runtime = Runtime.boot(use_env=False, pyproject=pyproject, plugins=plugins)
    app = create_app(runtime, schema=SCHEMA, store=server_store)
    async with app.router.lifespan_context(app):
        yield Served(app, tmp_path, store_url)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def server_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every behaviour runs on each server store."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/server.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


def collect(client: Client) -> list[ConflictEvent]:
    events: list[ConflictEvent] = []
    client.events.on("conflict", events.append)
    return events


@contextlib.asynccontextmanager
async def pair(server: Served) -> AsyncIterator[tuple[Client, Client]]:
    """c1 and c2, both holding t1 (created by c1) and caught up."""
    async with hosted(server.client("c1")) as c1, hosted(server.client("c2")) as c2:
        await c1.sync.clone()
        await c1.table("todos").insert({"id": "t1", "title": "first", "priority": 0})
        await c1.sync.push()
        await c1.sync.pull()
        await c2.sync.clone()
        yield c1, c2


async def converge(*clients: Client) -> list[Any]:
    for client in clients:
        await client.sync.push()
    for client in clients:
        await client.sync.pull()
    return [await client.table("todos").get("t1") for client in clients]


async def test_one_field_edited_by_two_clients_is_reported_on_both(
    tmp_path: Path, server_store: str, store_url: str
) -> None:
    async with served(tmp_path, server_store, store_url) as server, pair(server) as (c1, c2):
        seen1, seen2 = collect(c1), collect(c2)
        await c1.table("todos").merge({"id": "t1", "title": "ours"})  # offline, unseen by c2
        await c2.table("todos").merge({"id": "t1", "title": "theirs"})
        await c2.sync.push()
        await c1.sync.push()  # overwrites c2's title: last writer wins, reported
        [overwrote] = seen1
        assert overwrote.role == "overwrote" and overwrote.resolution == "last-writer-wins"
        assert (overwrote.resource, overwrote.record_id, overwrote.fields) == (
            "todos",
            "t1",
            ("title",),
        )
        assert (overwrote.ours, overwrote.theirs) == ({"title": "ours"}, {"title": "theirs"})
        assert overwrote.winner_client_id == "c1" and overwrote.other_client_id == "c2"
        assert overwrote.base_seq == 1 and overwrote.overwritten_seq == 2
        assert overwrote.winning_seq == 3
        await c2.sync.pull()
        [overwritten] = seen2
        assert overwritten.role == "overwritten"
        assert (overwritten.ours, overwritten.theirs) == ({"title": "theirs"}, {"title": "ours"})
        assert overwritten.winner_client_id == "c1" and overwritten.winning_seq == 3
        assert (overwritten.base_seq, overwritten.overwritten_seq) == (1, 2)
        # both hold the winner's record, and nothing more is reported
        assert (
            await converge(c1, c2)
            == [{"id": "t1", "title": "ours", "priority": 0, "done": False}] * 2
        )
        assert len(seen1) == len(seen2) == 1


async def test_reject_keeps_the_write_as_a_dead_letter_with_the_current_record(
    tmp_path: Path, store_url: str
) -> None:
    async with (
        served(tmp_path, "memory://", store_url, 'todos = "reject"') as server,
        pair(server) as (c1, c2),
    ):
        seen1 = collect(c1)
        rejected: list[Any] = []
        c1.events.on("mutation_rejected", rejected.append)
        await c1.table("todos").merge({"id": "t1", "title": "ours"})
        await c2.table("todos").merge({"id": "t1", "title": "theirs"})
        await c2.sync.push()
        report = await c1.sync.push()
        assert [d.record_id for d in report.dead] == ["t1"]
        [event] = seen1
        assert event.role == "rejected" and event.resolution == "reject"
        assert event.current == {"id": "t1", "title": "theirs", "priority": 0, "done": False}
        assert (event.ours, event.theirs, event.winner_client_id) == (
            {"title": "ours"},
            {"title": "theirs"},
            "c2",
        )
        assert [r.mutation_id for r in rejected] == [event.mutation_id]
        [dead] = [e for e in await c1.sync.pending() if e.state == "dead"]
        assert dead.record == {"id": "t1", "title": "ours"} and dead.last_error
        assert dead.last_error.startswith("CONFLICT")
        # the app merges with what it was shown and writes again: applied, no new conflict
        await c1.sync.pull()
        await c1.table("todos").merge({"id": "t1", "title": "theirs + ours"})
        await c1.sync.push()
        assert len(seen1) == 1
        [r1, r2] = await converge(c1, c2)
        assert r1 == r2 and r1 is not None and r1["title"] == "theirs + ours"


class AddPriorities:
    """A resolver that treats ``priority`` as a counter: concurrent additions add up."""

    @hookimpl
    def datafn_resolve_conflict(
        self, fields: list[str], current: dict[str, Any] | None, incoming: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        if fields != ["priority"] or current is None or incoming is None:
            return None
        return {"priority": current["priority"] + incoming["priority"]}


async def test_a_resolver_merges_a_counter(tmp_path: Path, store_url: str) -> None:
    async with (
        served(tmp_path, "memory://", store_url, plugins=(AddPriorities(),)) as server,
        pair(server) as (c1, c2),
    ):
        seen1 = collect(c1)
        # each adds to the counter it saw (0): +2 and +3 (the write carries the increment)
        await c2.table("todos").merge({"id": "t1", "priority": 2})
        await c2.sync.push()
        await c1.table("todos").merge({"id": "t1", "priority": 3})
        await c1.sync.push()
        [event] = seen1
        assert event.resolution == "resolver" and event.fields == ("priority",)
        [r1, r2] = await converge(c1, c2)
        assert r1 == r2 and r1 is not None and r1["priority"] == 5


async def test_no_conflict_for_other_fields_own_writes_or_seen_changes(
    tmp_path: Path, store_url: str
) -> None:
    async with served(tmp_path, "memory://", store_url) as server, pair(server) as (c1, c2):
        seen1, seen2 = collect(c1), collect(c2)
        await c1.table("todos").merge({"id": "t1", "done": True})
        await c2.table("todos").merge({"id": "t1", "title": "theirs"})
        await c2.sync.push()
        await c1.sync.push()  # another field: no conflict
        # the same client's successive offline writes, pushed apart: no conflict
        await c1.table("todos").merge({"id": "t1", "priority": 7})
        await c1.sync.push()
        await c1.table("todos").merge({"id": "t1", "priority": 8})
        await c1.sync.push()
        # a change seen (pulled) before writing: no conflict
        await c2.sync.pull()
        await c2.table("todos").merge({"id": "t1", "priority": 9})
        await c2.sync.push()
        [r1, r2] = await converge(c1, c2)
        assert r1 == r2 == {"id": "t1", "title": "theirs", "done": True, "priority": 9}
        assert seen1 == seen2 == []


async def test_each_pushed_write_carries_its_base(tmp_path: Path, store_url: str) -> None:
    async with served(tmp_path, "memory://", store_url) as server, pair(server) as (c1, _c2):
        await c1.table("todos").merge({"id": "t1", "title": "x"})
        [entry] = await c1.sync.pending()
        assert entry.base_seq == 1 and entry.to_mutation("c1")["baseSeq"] == 1


async def test_a_mutation_without_base_seq_is_last_writer_wins_unreported(
    tmp_path: Path,
) -> None:
    async with served(tmp_path, "memory://", "memory://", 'default = "reject"') as server:

        def push(client_id: str, title: str, **extra: Any) -> dict[str, Any]:
            return {
                "clientId": client_id,
                "mutations": [
                    {
                        "resource": "todos",
                        "operation": "merge",
                        "id": "t1",
                        "record": {"title": title},
                        "clientId": client_id,
                        "mutationId": f"{client_id}-{title}",
                        **extra,
                    }
                ],
            }

        assert (await server.post("push", push("a", "one")))["ok"]
        assert (await server.post("push", push("b", "two", baseSeq=1)))["ok"]
        # TypeScript-shaped (no baseSeq): applied as before, with the answer of before
        answer = await server.post("push", push("a", "three"))
        assert answer["ok"] and answer["applied"] == ["a-three"] and "conflicts" not in answer
        # b's title was overwritten by a's own later write (seq 3): no new conflict for a
        assert (await server.post("push", push("a", "four", baseSeq=1)))["ok"]
        # b writes again, having seen up to seq 4; a's stale write is refused, under reject
        assert (await server.post("push", push("b", "five", baseSeq=4)))["ok"]
        answer = await server.post("push", push("a", "six", baseSeq=1))
        [error] = answer["errors"]
        assert error["code"] == "CONFLICT" and error["path"] == "baseSeq"
        assert error["details"]["current"]["title"] == "five"
        assert (error["details"]["clientId"], error["details"]["seq"]) == ("b", 5)
        pulled = await server.post("pull", {"clientId": "z", "cursors": {"todos": "0"}})
        assert "conflicts" not in pulled


@pytest.mark.parametrize(
    ("value", "message"),
    [(-1, "greater than or equal to 0"), ("3", "valid integer"), (True, "valid integer")],
)
async def test_a_bad_base_seq_is_refused_with_its_path(
    tmp_path: Path, value: Any, message: str
) -> None:
    async with served(tmp_path, "memory://", "memory://") as server:
        answer = await server.post(
            "push",
            {
                "clientId": "a",
                "mutations": [
                    {
                        "resource": "todos",
                        "operation": "merge",
                        "id": "t1",
                        "record": {"title": "x"},
                        "clientId": "a",
                        "mutationId": "m",
                        "baseSeq": value,
                    }
                ],
            },
        )
        [error] = answer["errors"]
        assert error["code"] == "DFQL_INVALID" and error["path"] == "mutations[0].baseSeq"
        assert message in error["message"]
