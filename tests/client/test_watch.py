"""Watched queries and the records_changed events they are built on."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from datafn import BlockingClient, Client
from datafn.events import Event
from tests.client.conftest import SCHEMA, hosted
from tests.client.real_server import Server, serving


@pytest.fixture
async def server(store_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    async with serving(store_url, tmp_path) as found:
        yield found


def changes(
    client: Client,
) -> list[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...], bool]]:
    seen: list[Any] = []

    def record(event: Event) -> None:
        c = event.context
        seen.append((c.origin, c.inserted, c.updated, c.deleted, c.reset))

    client.events.on("records_changed", record)
    return seen


async def test_records_changed_for_every_path(server: Server) -> None:
    async with hosted(server.client("x")) as x, hosted(server.client("y")) as y:
        await x.sync.clone()
        seen = changes(x)
        todos = x.table("todos")
        await todos.insert({"id": "t1", "title": "a"})
        await todos.merge({"id": "t1", "done": True})
        await todos.delete("t1")
        assert seen == [
            ("local", ("t1",), (), (), False),
            ("local", (), ("t1",), (), False),
            ("local", (), (), ("t1",), False),
        ]
        await x.sync.push()
        seen.clear()
        await y.table("todos").insert({"id": "r1", "title": "remote"})
        await y.sync.push()
        await x.sync.pull()
        assert seen == [("remote", (), ("r1",), (), False)]
        seen.clear()
        await x.store.reset_hydration("todos")
        await x.sync.clone(["todos"])
        assert seen == [("remote", (), ("r1",), (), True)]  # a re-clone: the whole resource
        seen.clear()
        await x.table("todos").merge({"id": "r1", "title": "mine"})
        (queued,) = await x.sync.pending()
        await x.sync.discard(queued.mutation_id)
        assert seen[-1] == ("local", (), ("r1",), (), False)
        assert (await x.table("todos").get("r1"))["title"] == "remote"  # type: ignore[index]


async def test_a_watch_follows_local_and_remote_changes_and_stops_when_left(
    server: Server,
) -> None:
    async with hosted(server.client("x")) as x, hosted(server.client("y")) as y:
        await x.sync.clone()
        await y.sync.clone()
        results: list[list[str]] = []
        watch = x.table("todos").watch({"done": False}, sort="title")
        results.append([r["title"] for r in await anext(watch)])
        await x.table("todos").insert({"id": "a", "title": "local"})
        results.append([r["title"] for r in await anext(watch)])
        await y.table("todos").insert({"id": "b", "title": "remote"})
        await y.sync.push()
        await x.sync.pull()
        results.append([r["title"] for r in await anext(watch)])
        await x.table("todos").merge({"id": "a", "done": True})  # leaves the filter
        results.append([r["title"] for r in await anext(watch)])
        await y.table("todos").delete("b")
        await y.sync.push()
        await x.sync.pull()
        results.append([r["title"] for r in await anext(watch)])
        assert results == [[], ["local"], ["local", "remote"], ["remote"], []]
        listeners = len(x.events._listeners.get("records_changed", []))
        await watch.aclose()
        assert len(x.events._listeners.get("records_changed", [])) == listeners - 1


async def test_a_burst_of_pulled_changes_is_one_new_result(server: Server) -> None:
    async with (
        hosted(server.client("x", pull_batch_size=100)) as x,
        hosted(server.client("y", push_batch_size=500)) as y,
    ):
        await x.sync.clone()
        watch = x.table("todos").watch()
        assert await anext(watch) == []
        for i in range(1000):
            await y.table("todos").insert({"id": f"t{i:04}", "title": str(i)})
        await y.sync.push()
        pages = changes(x)
        await x.sync.pull()  # ten pages while nobody reads the watch
        assert len(pages) == 10
        assert len(await anext(watch)) == 1000  # one result for the whole burst
        await x.table("todos").insert({"id": "local", "title": "after"})
        assert len(await anext(watch)) == 1001  # no stale result in between
        await watch.aclose()


async def test_a_watch_of_a_table_that_did_not_change_does_not_wake(server: Server) -> None:
    async with hosted(server.client("x")) as x:
        await x.sync.clone()
        watch = x.table("notes").watch()
        assert await anext(watch) == []
        queries = 0
        original = x.store.query

        async def counted(*args: Any, **kw: Any) -> Any:
            nonlocal queries
            queries += 1
            return await original(*args, **kw)

        x.store.query = counted  # type: ignore[method-assign]
        for i in range(20):
            await x.table("todos").insert({"id": f"t{i}", "title": "x"})
        await x.table("notes").insert({"id": "n1", "body": "now"})
        assert [r["id"] for r in await anext(watch)] == ["n1"]
        assert queries == 1  # the todos writes cost the notes watch nothing
        await watch.aclose()


def test_the_blocking_watch_delivers_through_the_applications_function(tmp_path: Path) -> None:
    delivered: list[list[str]] = []
    threads: set[str] = set()
    got = threading.Event()

    def deliver(call: Any) -> None:  # what a GUI's "run on the main thread" does
        threads.add(threading.current_thread().name)
        call()

    def show(records: list[dict[str, Any]]) -> None:
        delivered.append([r["id"] for r in records])
        if len(delivered) == 2:
            got.set()

    with BlockingClient(schema=SCHEMA, store="memory://", use_env=False) as client:
        handle = client.table("todos").watch(show, deliver=deliver)
        client.table("todos").insert({"id": "t1", "title": "x"})
        assert got.wait(10)
        handle.close()
        client.table("todos").insert({"id": "t2", "title": "y"})
    assert delivered == [[], ["t1"]]
    assert threads and threading.current_thread().name not in threads
