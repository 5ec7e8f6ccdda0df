"""Automatic triggers of a started engine, and the blocking facade."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import anyio
import pytest

from datafn import BlockingClient, Client
from datafn.events import Event
from tests.client.conftest import REMOTE, SCHEMA, hosted
from tests.client.fake_server import FakeServer, unreachable


async def wait_for(predicate: Callable[[], object], limit: float = 5.0) -> None:
    """Poll ``predicate`` (plain or async) until it holds (the state lives in other tasks)."""
    with anyio.fail_after(limit):
        while True:
            outcome = predicate()
            if inspect.isawaitable(outcome):
                outcome = await outcome
            if outcome:
                return
            await anyio.sleep(0.01)


def count(server: FakeServer, endpoint: str) -> int:
    return sum(1 for e, _ in server.requests if e == endpoint)


async def test_start_runs_the_lifecycle_then_pushes_after_writes(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    server.write("todos", "insert", "s1", {"title": "server"})
    async with hosted(make_client(push_debounce=0.05)) as client:
        await client.sync.start()
        await wait_for(lambda: count(server, "pull") >= 1)
        assert await client.table("todos").get("s1") is not None

        async def idle() -> bool:
            return (await client.sync.status()).state == "idle"

        await wait_for(idle)  # the initial round is over
        for i in range(3):
            await client.table("todos").insert({"id": f"t{i}", "title": "x"})
        await wait_for(lambda: len(server.table("todos")) == 4)
        assert count(server, "push") == 1  # debounced into one push
        await client.sync.stop()
        assert (await client.sync.status()).state == "stopped"


async def test_interval_trigger_pushes_pending_changes(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    async with hosted(make_client(push_interval=0.1, triggers=["interval"])) as client:
        await client.table("todos").insert({"id": "t1", "title": "x"})
        await client.sync.start()
        await wait_for(lambda: "t1" in server.table("todos"))


async def test_connectivity_goes_offline_and_catches_up_on_return(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    async with hosted(
        make_client(triggers=["connectivity", "after_write"], retry_base_delay=0.01)
    ) as client:
        seen: list[Event] = []
        client.events.on("connectivity_changed", seen.append)
        client.sync.random = lambda: 0.0
        client.sync.config = client.sync.config.model_copy(
            update={
                "ws_reconnect": client.sync.config.ws_reconnect.model_copy(
                    update={"base_delay": 0.02, "max_delay": 0.05}
                )
            }
        )
        await client.sync.start()
        await wait_for(lambda: count(server, "pull") >= 1)
        for _ in range(3):
            server.fail("push", unreachable)
        server.fail("status", unreachable)
        await client.table("todos").insert({"id": "t1", "title": "offline write"})
        await wait_for(lambda: seen and seen[-1].context.online is False)
        assert not client.sync.online
        assert (await client.sync.status()).state == "offline"
        await wait_for(lambda: len(seen) >= 2, limit=10)
        assert [e.context.online for e in seen] == [False, True]
        await wait_for(lambda: "t1" in server.table("todos"))


async def test_focus_signal_pulls(make_client: Callable[..., Client], server: FakeServer) -> None:
    async with hosted(make_client(triggers=["focus"])) as client:
        await client.sync.start()
        await wait_for(lambda: count(server, "pull") >= 1)
        server.write("todos", "insert", "s1", {"title": "from elsewhere"})
        await client.sync.notify("focus")
        await wait_for(lambda: count(server, "pull") >= 2)
        await wait_for(lambda: client.table("todos").get("s1"))
        with pytest.raises(ValueError):
            await client.sync.notify("blur")


async def test_post_push_trigger_pulls_foreign_changes(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    async with hosted(make_client(triggers=["post_push"])) as client:
        await client.sync.start()
        await wait_for(lambda: "post_push" in client.sync.active_triggers)
        await wait_for(lambda: count(server, "pull") >= 1)
        server.write("notes", "insert", "n1", {"body": "foreign"})
        await client.table("todos").insert({"id": "t1", "title": "x"})
        pulls = count(server, "pull")
        report = await client.sync.push()
        assert report.foreign_changes
        await wait_for(lambda: count(server, "pull") > pulls)
        await wait_for(lambda: client.table("notes").get("n1"))


async def test_announced_cursor_pulls_only_when_ahead(client: Client, server: FakeServer) -> None:
    await client.sync.clone()
    await client.sync.pull()
    assert not await client.sync.cursor_announced("0")
    server.write("todos", "insert", "s1", {"title": "x"})
    assert await client.sync.cursor_announced(str(server.seq))
    assert await client.table("todos").get("s1") is not None


async def test_announced_cursors_pull_in_the_background_while_started(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    async with hosted(make_client(triggers=[])) as client:
        await client.sync.start()
        await wait_for(lambda: "announced" in client.sync.active_triggers)
        await wait_for(lambda: count(server, "pull") >= 1)
        server.write("todos", "insert", "s1", {"title": "x"})
        assert await client.sync.cursor_announced(server.seq)
        await wait_for(lambda: client.table("todos").get("s1"))


def test_blocking_client(server: FakeServer) -> None:
    from datafn.builtins.client_http import HttpTransport

    transport = HttpTransport(REMOTE, transport=server.transport())
    seen: list[str] = []
    with BlockingClient(
        schema=SCHEMA, store="memory://", transport=transport, use_env=False
    ) as client:
        client.events.on("mutation_applied", lambda e: seen.append(e.context.record_id))
        todos = client.table("todos")
        record = todos.insert({"title": "from a script"})
        assert todos.get(record["id"]) == record
        assert todos.query({"done": False}) == [record]
        assert client.sync.status().pending_changes == 1
        client.sync.push()
        assert record["id"] in server.table("todos")
        client.sync.start()
        client.sync.notify("focus")
        client.sync.stop()
    assert seen == [record["id"]]


async def test_start_seeds_syncs_and_reconciles_in_the_documented_order(
    make_client: Callable[..., Client], server: FakeServer, tmp_path: object
) -> None:
    from pathlib import Path

    seed_file = Path(str(tmp_path)) / "seed.json"
    seed_file.write_text('{"todos": [{"id": "seeded", "title": "from the seed file"}]}')
    async with hosted(make_client(seed_file=str(seed_file))) as client:
        await client.sync.start()
        await wait_for(lambda: count(server, "reconcile") >= 2)  # clone totals, then the phase
        await client.sync.stop()
        order = [e for e, _ in server.requests if e in ("seed", "clone", "pull", "reconcile")]
        # the clone asks for reconcile counts first (progress totals); drop that one
        first = order.index("clone")
        assert order[0] == "seed" and order.index("pull") > first
        assert order[-1] == "reconcile" and order.count("reconcile") == 2
        assert await client.table("todos").get("seeded") == {
            "id": "seeded",
            "title": "from the seed file",
        }


async def test_a_bad_seed_file_fails_start_with_the_key(
    make_client: Callable[..., Client], tmp_path: object
) -> None:
    from pathlib import Path

    from datafn import ConfigError

    missing = Path(str(tmp_path)) / "nope.json"
    async with hosted(make_client(seed_file=str(missing))) as client:
        with pytest.raises(ConfigError, match=r"^tool\.datafn\.sync\.seed-file: cannot read"):
            await client.sync.start()


async def test_reconcile_on_start_can_be_turned_off(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    async with hosted(make_client(reconcile_on_start=False)) as client:
        await client.sync.start()

        async def idle() -> bool:
            return count(server, "pull") >= 1 and (await client.sync.status()).state == "idle"

        await wait_for(idle)
        await client.sync.stop()
    # one reconcile request remains: the clone asking for its progress totals
    assert count(server, "reconcile") == 1


def test_the_blocking_facade_offers_every_sync_operation() -> None:
    from datafn.client.blocking import BlockingSync
    from datafn.client.engine import OPERATIONS, SyncEngine

    for name in OPERATIONS:
        assert callable(getattr(SyncEngine, name)), name
        assert callable(getattr(BlockingSync, name, None)), f"BlockingSync lacks {name}"
