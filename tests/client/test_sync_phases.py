"""The phases against an in-memory server behind httpx.MockTransport."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from datafn import Client, Conflict, DatafnError, SyncVetoed, TransportError, Veto, hookimpl
from datafn.events import Event
from tests.client.conftest import _no_sleep, hosted
from tests.client.fake_server import FakeServer, envelope_error, unreachable


def record_events(client: Client) -> list[Event]:
    seen: list[Event] = []
    client.events.on("*", seen.append)
    return seen


def write_todos(server: FakeServer, count: int, width: int = 1) -> None:
    """Another writer's ``count`` todos ``t0``, ``t1``, … (ids zero-padded to ``width``)."""
    for i in range(count):
        server.write("todos", "insert", f"t{i:0{width}}", {"title": f"task {i}"})


def names(events: list[Event]) -> list[tuple[str, str | None]]:
    return [(e.name, e.context.phase) for e in events if e.name.startswith("sync_")]


# -- clone ----------------------------------------------------------------------------------


async def test_clone_pages_with_progress_and_events(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    write_todos(server, 7)
    async with hosted(make_client(clone_page_size=3)) as client:
        events = record_events(client)
        report = await client.sync.clone()
        assert report.records == {"todos": 7, "notes": 0, "kv": 0}
        assert await client.table("todos").count() == 7
        status = await client.sync.status()
        assert status.hydration == {"todos": "ready", "notes": "ready", "kv": "ready"}
        assert status.cursors["todos"] == 7
        progress = status.download_progress["todos"]
        assert (progress.done, progress.total, progress.finished) == (7, 7, True)
        assert names(events) == [("sync_started", "clone"), ("sync_applied", "clone")]
        pages = [p["page"]["afterId"] for e, p in server.requests if e == "clone"]
        assert pages == [None, "t2", "t5", None, None]  # 3 pages of todos, 1 of notes, 1 of kv


async def test_clone_resumes_after_the_last_applied_page(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    write_todos(server, 7)
    async with hosted(make_client(clone_page_size=3)) as client:
        server.faults["clone"] = [lambda p: server_ok(server, p), unreachable]
        with pytest.raises(TransportError):
            await client.sync.clone(["todos"])
        state = (await client.store.states(["todos"]))["todos"]
        assert state.hydration == "hydrating" and state.clone_after_id == "t2"
        assert state.clone_cursor == 7
        server.requests.clear()
        await client.sync.clone(["todos"])
        pages = [p["page"]["afterId"] for e, p in server.requests if e == "clone"]
        assert pages == ["t2", "t5"]
        assert await client.table("todos").count() == 7
        assert (await client.sync.status()).hydration["todos"] == "ready"


def server_ok(server: FakeServer, payload: Any) -> httpx.Response:
    return httpx.Response(200, json={"ok": True, "result": server.do_clone(payload)})


def gate_applies(client: Client, gate: anyio.Event) -> list[int]:
    """Hold every clone page write until ``gate`` is set; returns the record count per write."""
    original = client.store.apply_clone_page
    sizes: list[int] = []

    async def held(resource: str, records: Any, **kwargs: Any) -> None:
        await gate.wait()
        sizes.append(len(records))
        await original(resource, records, **kwargs)

    client.store.apply_clone_page = held  # type: ignore[method-assign]
    return sizes


async def test_pages_fetched_before_a_failure_are_written_first(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    write_todos(server, 9)
    failed = anyio.Event()

    def fail(payload: Any) -> httpx.Response:
        failed.set()
        return unreachable(payload)

    async with hosted(make_client(clone_page_size=3)) as client:
        ok = [lambda p: server_ok(server, p)] * 2
        server.faults["clone"] = [*ok, fail]
        sizes = gate_applies(client, failed)  # the failure arrives while page 1 is written
        with pytest.raises(TransportError):
            await client.sync.clone(["todos"])
        assert sizes == [3, 3]  # page 2 came with the failure and was still written
        state = (await client.store.states(["todos"]))["todos"]
        assert state.hydration == "hydrating" and state.clone_after_id == "t5"
        assert await client.table("todos").count() == 6


@pytest.mark.parametrize("buffer", [1, 3])
async def test_fetching_runs_at_most_clone_buffer_pages_ahead_of_the_writes(
    make_client: Callable[..., Client], server: FakeServer, buffer: int
) -> None:
    write_todos(server, 30, 2)
    async with hosted(make_client(clone_page_size=2, clone_buffer_pages=buffer)) as client:
        gate = anyio.Event()
        sizes = gate_applies(client, gate)
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.sync.clone, ["todos"])
            await anyio.wait_all_tasks_blocked()
            fetched = [p for e, p in server.requests if e == "clone"]
            # the page being written, a full buffer, and one page waiting for room
            assert len(fetched) == 1 + buffer + 1
            gate.set()
        assert sum(sizes) == 30 and max(sizes) <= 2 * buffer  # a write takes what has arrived
        assert await client.table("todos").count() == 30
        assert (await client.sync.status()).hydration["todos"] == "ready"


async def test_changes_made_during_the_clone_are_pulled_afterwards(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    write_todos(server, 6)

    def first_page_then_write(payload: Any) -> httpx.Response:
        response = server_ok(server, payload)
        server.write("todos", "merge", "t0", {"title": "changed during clone"})
        server.write("todos", "delete", "t4")
        return response

    async with hosted(make_client(clone_page_size=3)) as client:
        server.faults["clone"] = [first_page_then_write]
        await client.sync.clone(["todos"])
        assert (await client.table("todos").get("t0"))["title"] == "task 0"  # type: ignore[index]
        assert (await client.sync.status()).cursors["todos"] == 6
        await client.sync.pull()
        assert (await client.table("todos").get("t0"))["title"] == "changed during clone"  # type: ignore[index]
        assert await client.table("todos").get("t4") is None
        assert sorted(r["id"] for r in await client.table("todos").query()) == sorted(
            server.table("todos")
        )


# -- pull -----------------------------------------------------------------------------------


async def test_pull_repeats_while_has_more_up_to_max_iterations(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    async with hosted(make_client(pull_batch_size=10, max_pull_iterations=3)) as client:
        await client.sync.clone()
        for i in range(45):
            server.write("todos", "insert", f"t{i:02}", {"title": "x"})
        report = await client.sync.pull()
        assert (report.requests, report.changes, report.has_more) == (3, 30, True)
        assert all(p["limit"] == 10 for e, p in server.requests if e == "pull")
        report = await client.sync.pull()
        assert (report.requests, report.has_more) == (2, False)
        assert await client.table("todos").count() == 45
        assert (await client.sync.status()).cursors["todos"] == 45


async def test_pull_applies_merges_and_deletes(client: Client, server: FakeServer) -> None:
    server.write("todos", "insert", "t1", {"title": "a", "priority": 1})
    server.write("todos", "insert", "t2", {"title": "b"})
    await client.sync.clone()
    server.write("todos", "merge", "t1", {"done": True})
    server.write("todos", "delete", "t2")
    server.write("notes", "insert", "n1", {"body": "hi"})
    await client.sync.pull()
    assert await client.table("todos").get("t1") == {
        "id": "t1",
        "title": "a",
        "priority": 1,
        "done": True,
    }
    assert await client.table("todos").get("t2") is None
    assert await client.table("notes").get("n1") == {"id": "n1", "body": "hi"}


async def test_a_cursor_moving_backwards_is_refused_and_nothing_applied(
    client: Client, server: FakeServer
) -> None:
    server.write("todos", "insert", "t1", {"title": "a"})
    await client.sync.clone()
    events = record_events(client)
    backwards = {
        "records": {"todos": [{"id": "t9", "title": "evil"}]},
        "cursors": {"todos": "0", "notes": "0"},
        "hasMore": False,
    }
    server.fail("pull", lambda p: httpx.Response(200, json={"ok": True, "result": backwards}))
    with pytest.raises(Conflict) as info:
        await client.sync.pull()
    assert info.value.path == "cursors.todos"
    assert await client.table("todos").get("t9") is None
    assert (await client.sync.status()).cursors["todos"] == 1
    assert names(events)[-1] == ("sync_failed", "pull")


async def test_pulled_data_is_rebased_under_pending_local_writes(
    client: Client, server: FakeServer
) -> None:
    server.write("todos", "insert", "t1", {"title": "server", "priority": 1})
    await client.sync.clone()
    await client.table("todos").merge({"id": "t1", "done": True})
    server.write("todos", "replace", "t1", {"title": "server v2", "priority": 2})
    await client.sync.pull()
    assert await client.table("todos").get("t1") == {
        "id": "t1",
        "title": "server v2",
        "priority": 2,
        "done": True,
    }


# -- push -----------------------------------------------------------------------------------


async def test_push_sends_the_changelog_in_batches_in_order(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    async with hosted(make_client(push_batch_size=4)) as client:
        await client.sync.clone()
        await client.sync.pull()
        for i in range(10):
            await client.table("todos").insert({"id": f"t{i}", "title": str(i)})
        await client.table("todos").delete("t0")
        report = await client.sync.push()
        assert (report.applied, report.batches) == (11, 3)
        assert report.cursor == server.seq
        batches = [p["mutations"] for e, p in server.requests if e == "push"]
        assert [len(b) for b in batches] == [4, 4, 3]
        assert [m["id"] for b in batches for m in b][:3] == ["t0", "t1", "t2"]
        assert batches[-1][-1]["operation"] == "delete"
        assert await client.store.pending_count() == 0
        assert sorted(server.table("todos")) == [f"t{i}" for i in range(1, 10)]
        # nobody else wrote, yet the server's copies of our writes come back by one pull:
        # a cursor never moves past changes this client has not pulled
        assert not report.foreign_changes
        assert (await client.sync.status()).cursors["todos"] == server.seq
        assert [e for e, _ in server.requests].count("pull") == 2


async def test_push_retries_with_backoff_and_jitter(client: Client, server: FakeServer) -> None:
    await client.table("todos").insert({"id": "t1", "title": "a"})
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    client.sync.sleep = sleep
    client.sync.random = lambda: 0.5
    events = record_events(client)
    server.fail("push", unreachable)
    server.fail("push", envelope_error(503, "SERVICE_UNAVAILABLE"))
    report = await client.sync.push()
    assert report.applied == 1
    base = client.sync.config.retry_base_delay
    assert delays == [base + 0.5 * base, 2 * base + 0.5 * base]
    retries = [e for e in events if e.name == "sync_retry"]
    assert [(e.context.attempt, e.context.delay) for e in retries] == [
        (1, delays[0]),
        (2, delays[1]),
    ]
    assert isinstance(retries[0].context.error, TransportError)


async def test_push_gives_up_after_max_retries_with_sync_failed(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    async with hosted(make_client(push_max_retries=2)) as client:
        client.sync.sleep = _no_sleep
        await client.table("todos").insert({"id": "t1", "title": "a"})
        events = record_events(client)
        for _ in range(3):
            server.fail("push", envelope_error(500, "INTERNAL", "database is down"))
        with pytest.raises(Exception) as info:
            await client.sync.push()
        assert getattr(info.value, "code", None) == "INTERNAL"
        assert [e.name for e in events].count("sync_retry") == 2
        failed = [e for e in events if e.name == "sync_failed"]
        assert failed and failed[0].context.error.message == "database is down"
        assert await client.store.pending_count() == 1
        assert (await client.sync.status()).last_error is failed[0].context.error


async def test_writes_with_a_final_outcome_leave_the_queue_retryable_ones_stay(
    client: Client, server: FakeServer
) -> None:
    for i in range(4):
        await client.table("todos").insert({"id": f"t{i}", "title": str(i)})
    entries = await client.store.changelog()

    def partial(payload: Any) -> httpx.Response:
        ids = [m["mutationId"] for m in payload["mutations"]]
        mutations = payload["mutations"]
        for m in [mutations[0], mutations[1], mutations[3]]:
            server.apply(m)
            server.done[(m["clientId"], m["mutationId"])] = {"ok": True}
        result = {
            "ok": False,
            "applied": [ids[0], ids[1], ids[3]],
            "errors": [
                {
                    "mutationId": ids[2],
                    "code": "INTERNAL",
                    "message": "x",
                    "path": "$",
                    "retryable": True,
                }
            ],
            "cursor": str(server.seq),
            "cursorBefore": "0",
            "cursors": {},
        }
        return httpx.Response(200, json={"ok": True, "result": result})

    server.fail("push", partial)
    server.fail("push", lambda p: (_ for _ in ()).throw(httpx.ConnectError("down")))
    client.sync.config = client.sync.config.model_copy(update={"push_max_retries": 1})
    with pytest.raises(TransportError):
        await client.sync.push()
    left = await client.store.changelog()
    # t3 was applied after t2's retryable failure: it leaves the queue too (sending it again
    # would only be a replay); t2 stays, with its attempt and error
    assert [e.seq for e in left] == [entries[2].seq]
    assert left[0].attempts == 2 and left[0].last_error is not None
    await client.sync.push()  # t2 goes now
    assert sorted(server.table("todos")) == ["t0", "t1", "t2", "t3"]
    pushed = [m["id"] for e, p in server.requests if e == "push" for m in p["mutations"]]
    assert pushed == ["t0", "t1", "t2", "t3", "t2", "t2"]


async def test_guarded_conflict_is_rejected_and_reported(
    client: Client, server: FakeServer
) -> None:
    server.write("todos", "insert", "t1", {"title": "a", "priority": 1})
    await client.sync.clone()
    await client.sync.pull()
    server.write("todos", "merge", "t1", {"priority": 5})  # another writer
    events = record_events(client)
    await client.table("todos").merge({"id": "t1", "title": "mine"}, guard={"priority": 1})
    await client.table("todos").insert({"id": "t2", "title": "fine"})
    report = await client.sync.push()
    assert report.applied == 1 and len(report.rejected) == 1
    rejected = [e for e in events if e.name == "mutation_rejected"]
    assert len(rejected) == 1
    error = rejected[0].context.error
    assert (error.code, error.path) == ("CONFLICT", "if")
    assert rejected[0].context.record_id == "t1"
    assert await client.store.pending_count() == 0
    # the refused local write was replaced by the server's truth
    assert await client.table("todos").get("t1") == {"id": "t1", "title": "a", "priority": 5}
    assert await client.table("todos").get("t2") is not None


async def test_foreign_changes_during_push_cause_a_pull(client: Client, server: FakeServer) -> None:
    await client.sync.clone()
    await client.sync.pull()
    server.write("notes", "insert", "n1", {"body": "from another writer"})
    await client.table("todos").insert({"id": "t1", "title": "a"})
    report = await client.sync.push()
    assert report.foreign_changes
    assert await client.table("notes").get("n1") is not None
    status = await client.sync.status()
    assert status.cursors == {"todos": 2, "notes": 1, "kv": 0}


# -- policies --------------------------------------------------------------------------------


class VetoPush:
    @hookimpl
    def datafn_before_sync(self, phase: str, payload: Any) -> Any:
        if phase == "push":
            return Veto("pushing is frozen")
        return None


class BrokenObserver:
    @hookimpl
    def datafn_after_sync(self, phase: str) -> None:
        raise RuntimeError("observer broke")


class StampPayload:
    @hookimpl
    def datafn_before_sync(self, phase: str, payload: Any) -> Any:
        if phase == "push":
            return {**payload, "mutations": payload["mutations"][:1]}
        return None


async def test_before_sync_veto_aborts_the_phase(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    async with hosted(make_client(plugins=[VetoPush()])) as client:
        await client.table("todos").insert({"id": "t1", "title": "a"})
        events = record_events(client)
        with pytest.raises(SyncVetoed) as info:
            await client.sync.push()
        assert "pushing is frozen" in str(info.value)
        assert not [e for e, _ in server.requests if e == "push"]
        assert await client.store.pending_count() == 1
        assert names(events) == [("sync_started", "push"), ("sync_failed", "push")]


async def test_before_sync_may_replace_the_payload(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    async with hosted(make_client(plugins=[StampPayload()])) as client:
        await client.table("todos").insert({"id": "t1", "title": "a"})
        await client.table("todos").insert({"id": "t2", "title": "b"})
        await client.sync.push()
        assert list(server.table("todos")) == ["t1", "t2"]
        assert [len(p["mutations"]) for e, p in server.requests if e == "push"] == [1, 1]


async def test_after_sync_failure_does_not_stop_sync(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    async with hosted(make_client(plugins=[BrokenObserver()])) as client:
        await client.table("todos").insert({"id": "t1", "title": "a"})
        events = record_events(client)
        report = await client.sync.push()
        assert report.applied == 1
        assert "t1" in server.table("todos")
        errors = [e for e in events if e.name == "plugin_error"]
        assert errors and "observer broke" in str(errors[0].context.error)
        assert ("sync_applied", "push") in names(events)


# -- clone_up, reconcile, seed ---------------------------------------------------------------


async def test_clone_up_pushes_queued_writes_as_themselves_and_uploads_the_rest_once(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    async with hosted(make_client(push_batch_size=3)) as client:
        # records no queued write accounts for (put there by an older version, an import)
        for i in range(4):
            await client.table("todos").insert({"id": f"i{i}", "title": f"imported {i}"})
        await client.store.acknowledge([e.seq for e in await client.store.changelog()])
        # and writes made offline, one of them guarded, one on an imported record
        for i in range(3):
            await client.table("todos").insert({"id": f"t{i}", "title": str(i)})
        await client.table("todos").delete("t2")
        await client.table("todos").merge({"id": "i0", "done": True})
        queued = {e.mutation_id for e in await client.store.changelog()}
        server.write("todos", "insert", "s1", {"title": "server"})
        server.fail("clone", unreachable)  # crash-like: uploaded and pushed, the clone fails
        with pytest.raises(TransportError):
            await client.sync.clone_up(["todos"])
        changes = server.seq
        report = await client.sync.clone_up(["todos"])  # the re-run applies nothing twice
        assert server.seq == changes
        assert report.uploaded == {}  # no longer "never synced": nothing is uploaded
        sent = [m for e, p in server.requests if e == "push" for m in p["mutations"]]
        uploads = [m for m in sent if m["mutationId"].startswith("cloneup:")]
        assert {m["id"] for m in uploads} == {"i0", "i1", "i2", "i3"}
        assert {m["operation"] for m in uploads} == {"insert"}
        # i0 went up as it was before the queued merge: the merge follows as itself
        assert {m["record"]["title"] for m in uploads if m["id"] == "i0"} == {"imported 0"}
        assert {m["mutationId"] for m in sent if m not in uploads} == queued
        assert server.table("todos")["i0"] == {"id": "i0", "title": "imported 0", "done": True}
        assert sorted(server.table("todos")) == ["i0", "i1", "i2", "i3", "s1", "t0", "t1"]
        assert await client.store.pending_count() == 0
        assert sorted(r["id"] for r in await client.table("todos").query()) == sorted(
            server.table("todos")
        )


async def test_reconcile_reclones_mismatched_resources(client: Client, server: FakeServer) -> None:
    for i in range(3):
        server.write("todos", "insert", f"t{i}", {"title": str(i)})
    await client.sync.clone()
    # drift: the server lost a record without a change-log entry
    del server.records["todos"]["t1"]
    report = await client.sync.reconcile()
    assert report.recloned == ["todos"]
    assert report.local["todos"] == 3 and report.remote["todos"] == 2
    assert sorted(r["id"] for r in await client.table("todos").query()) == ["t0", "t2"]
    report = await client.sync.reconcile()
    assert report.recloned == []


async def test_seed(client: Client, server: FakeServer) -> None:
    result = await client.sync.seed({"todos": [{"id": "s1", "title": "seeded"}]})
    assert result.inserted == {"todos": 1}
    assert "s1" in server.table("todos")


async def test_sync_without_a_remote_is_a_config_error(
    make_client: Callable[..., Client],
) -> None:
    from datafn import ConfigError

    async with hosted(make_client(transport=None)) as client:
        with pytest.raises(ConfigError):
            await client.sync.pull()


async def test_a_refused_write_is_taken_out_of_the_local_view_without_a_reclone(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    from tests.client.fake_server import unreachable

    server.write("todos", "insert", "t1", {"title": "server copy"})
    async with hosted(make_client(push_max_retries=0)) as client:
        await client.sync.sync_all()
        # a guarded write the server refuses for good, and a later write of the same record
        await client.table("todos").merge({"id": "t1", "title": "mine"}, guard={"title": "old"})
        await client.table("todos").merge({"id": "t1", "done": True})
        server.fail("clone", unreachable)  # no clone is needed: none is asked for
        server.fail("pull", unreachable)
        with contextlib.suppress(DatafnError):
            await client.sync.push()
        assert await client.table("todos").get("t1") == {
            "id": "t1",
            "title": "server copy",
            "done": True,
        }
        assert (await client.sync.status()).hydration["todos"] == "ready"
        server.write("todos", "merge", "t1", {"title": "newer on the server"})
        await client.sync.sync_all()
        assert await client.table("todos").get("t1") == server.table("todos")["t1"]
    endpoints = [e for e, _ in server.requests]
    assert "clone" not in endpoints[endpoints.index("push") :]
    uploads = [
        m
        for endpoint, payload in server.requests
        if endpoint == "push"
        for m in payload["mutations"]
        if m["mutationId"].startswith("cloneup:")
    ]
    assert uploads == [], "stale local records must never be uploaded over the server's"
    assert server.table("todos")["t1"]["title"] == "newer on the server"


async def test_the_progress_total_is_the_server_count_asked_alongside_the_first_pages(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    write_todos(server, 9)
    async with hosted(make_client(clone_page_size=3)) as client:
        gate = anyio.Event()
        gate_applies(client, gate)
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.sync.clone, ["todos"])
            await anyio.wait_all_tasks_blocked()
            progress = (await client.sync.status()).download_progress["todos"]
            assert (progress.done, progress.total, progress.finished) == (0, 9, False)
            gate.set()
        progress = (await client.sync.status()).download_progress["todos"]
        assert (progress.done, progress.total, progress.finished) == (9, 9, True)


# -- own writes above the cursor ------------------------------------------------------------


def server_pull(server: FakeServer, payload: Any) -> httpx.Response:
    return httpx.Response(200, json={"ok": True, "result": server.do_pull(payload)})


async def test_an_interrupted_pull_after_a_push_never_shows_older_states_of_own_writes(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    async with hosted(make_client(pull_batch_size=10)) as client:
        await client.sync.clone()
        notes = client.table("notes")
        await notes.insert({"id": "n1", "body": "v0"})
        for j in range(1, 15):
            await notes.merge({"id": "n1", "body": f"v{j}"})
        # the pull after the push gets its first page (the record at v9), then the network goes
        server.faults["pull"] = [lambda p: server_pull(server, p), unreachable]
        with pytest.raises(TransportError):
            await client.sync.push()
        assert await client.store.pending_count() == 0
        assert server.table("notes")["n1"]["body"] == "v14"
        assert (await notes.get("n1")) == {"id": "n1", "body": "v14"}  # not v9
        await client.sync.pull()  # the whole pull, in one transaction
        assert (await notes.get("n1")) == {"id": "n1", "body": "v14"}
        assert await client.store.get_meta("own_writes_unpulled") == "0"


async def test_pages_gathered_after_a_push_keep_foreign_writes_made_after_ours(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    async with hosted(make_client(pull_batch_size=10)) as client:
        await client.sync.clone()
        notes = client.table("notes")
        for j in range(12):
            await notes.merge({"id": f"n{j:02}", "body": "mine"})
        original = server.do_push

        def push_then_foreign(payload: Any) -> Any:
            answer = original(payload)
            server.write("notes", "merge", "n03", {"body": "theirs"})
            server.write("notes", "delete", "n05")
            server.write("notes", "merge", "n99", {"body": "new"})
            return answer

        server.do_push = push_then_foreign  # type: ignore[method-assign]
        await client.sync.push()
        assert {r["id"]: r["body"] for r in await notes.query()} == {
            i: r["body"] for i, r in server.table("notes").items()
        }
        assert (await notes.get("n03"))["body"] == "theirs"  # type: ignore[index]
        assert await notes.get("n05") is None


async def test_a_failing_write_stops_the_clone_with_its_own_error_while_fetching_waits(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    from datafn.errors import StoreError

    write_todos(server, 20, 2)
    async with hosted(make_client(clone_page_size=2, clone_buffer_pages=1)) as client:
        gate = anyio.Event()

        async def broken(resource: str, records: Any, **kwargs: Any) -> None:
            await gate.wait()
            raise StoreError("disk full")

        client.store.apply_clone_page = broken  # type: ignore[method-assign]
        raised: list[BaseException] = []

        async def clone() -> None:
            try:
                await client.sync.clone(["todos"])
            except BaseException as exc:
                raised.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(clone)
            await anyio.wait_all_tasks_blocked()  # the fetcher waits for room
            gate.set()
        assert [type(e) for e in raised] == [StoreError]  # its own error, not a group
        state = (await client.store.states(["todos"]))["todos"]
        assert state.hydration != "ready" and await client.table("todos").count() == 0


async def test_the_pull_after_a_push_goes_past_max_pull_iterations_until_it_has_caught_up(
    make_client: Callable[..., Client], server: FakeServer
) -> None:
    async with hosted(make_client(pull_batch_size=10, max_pull_iterations=2)) as client:
        await client.sync.clone()
        server.write("notes", "insert", "x", {"body": "older, theirs"})
        for i in range(40):  # a backlog of other writers' changes, beyond 2 pulls of 10
            server.write("notes", "insert", f"o{i:02}", {"body": "theirs"})
        notes = client.table("notes")
        await notes.replace({"id": "x", "body": "mine"})
        report = await client.sync.push()
        assert report.applied == 1
        assert (await notes.get("x")) == {"id": "x", "body": "mine"}  # never the older state
        assert await notes.count() == 41
        status = await client.sync.status()
        assert status.cursors["notes"] == 42 and status.pending_changes == 0
        assert await client.store.get_meta("own_writes_unpulled") == "0"
