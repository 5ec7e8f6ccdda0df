"""The conformance suite every client store runs (the memory store and the SQLite store do).

Subclass :class:`ClientStoreConformance` in a test module and provide a ``store_factory``
fixture returning ``factory(schema) -> ClientStore`` (unopened); set ``durable = True`` when
the store keeps its data across a close and reopen with the same factory::

    from datafn.testing.client_store import ClientStoreConformance

    class TestMyStore(ClientStoreConformance):
        durable = True

        @pytest.fixture
        def store_factory(self, tmp_path):
            return lambda schema: MyStore(f"my://{tmp_path}/db", schema, None)

The tests check the contract of :class:`datafn.client.store.ClientStore`, including its two
atomicity rules and the rebase of pending local writes under server data.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from datafn.client.store import (
    ClientStore,
    LocalWrite,
    PullPage,
    Query,
    matches,
    sort_records,
)
from datafn.errors import Conflict, DatafnError, ValidationFailed
from datafn.schema import Schema, load_schema

__all__ = ["CONFORMANCE_SCHEMA", "ClientStoreConformance"]

#: The schema the suite's stores are built for.
CONFORMANCE_SCHEMA: dict[str, Any] = {
    "resources": [
        {
            "name": "todos",
            "idPrefix": "todo",
            "fields": [
                {"name": "title", "type": "string"},
                {"name": "done", "type": "boolean"},
                {"name": "priority", "type": "number", "nullable": True},
                {"name": "tags", "type": "array"},
                {"name": "meta", "type": "object"},
            ],
        },
        {"name": "notes", "fields": [{"name": "body", "type": "string"}]},
        {"name": "remote", "isRemoteOnly": True, "fields": []},
    ]
}

StoreFactory = Callable[[Schema], ClientStore]


def _write(resource: str, operation: str, record_id: str, record: Any = None, **kw: Any) -> Any:
    body = dict(record, id=record_id) if record is not None else None
    return LocalWrite(
        resource=resource,
        operation=operation,  # type: ignore[arg-type]
        record_id=record_id,
        record=body,
        mutation_id=kw.pop("mutation_id", str(uuid.uuid4())),
        **kw,
    )


class ClientStoreConformance:
    """The client store contract, as tests. See the module docstring."""

    durable = False

    @pytest.fixture
    def schema(self) -> Schema:
        return load_schema(CONFORMANCE_SCHEMA)

    @pytest.fixture
    async def store(
        self, store_factory: StoreFactory, schema: Schema
    ) -> AsyncIterator[ClientStore]:
        store = store_factory(schema)
        await store.open()
        try:
            yield store
        finally:
            await store.aclose()

    # -- metadata and records ------------------------------------------------------------------

    async def test_meta_round_trip(self, store: ClientStore) -> None:
        assert await store.get_meta("client_id") is None
        await store.set_meta("client_id", "c1")
        await store.set_meta("client_id", "c2")
        assert await store.get_meta("client_id") == "c2"

    async def test_writes_apply_and_append_the_changelog_in_order(self, store: ClientStore) -> None:
        record = {"title": "a", "done": False, "tags": ["x"], "meta": {"n": 1.5}}
        after, first = await store.write(_write("todos", "insert", "t1", record))
        assert after == {"id": "t1", **record}
        assert await store.get("todos", "t1") == after
        after, _ = await store.write(_write("todos", "merge", "t1", {"done": True}))
        assert after == {"id": "t1", **record, "done": True}
        after, _ = await store.write(_write("todos", "replace", "t1", {"title": "b"}))
        assert after == {"id": "t1", "title": "b"}
        after, last = await store.write(_write("todos", "delete", "t1", guard={"title": "b"}))
        assert after is None and await store.get("todos", "t1") is None
        entries = await store.changelog()
        assert [e.operation for e in entries] == ["insert", "merge", "replace", "delete"]
        assert entries[0] == first and entries[-1] == last
        assert entries[-1].guard == {"title": "b"} and entries[-1].record is None
        assert [e.seq for e in entries] == sorted(e.seq for e in entries)
        assert await store.pending_count() == 4
        assert len(await store.changelog(limit=2)) == 2

    async def test_merge_creates_a_missing_record(self, store: ClientStore) -> None:
        after, _ = await store.write(_write("notes", "merge", "n1", {"body": "x"}))
        assert after == {"id": "n1", "body": "x"}

    async def test_duplicate_insert_is_a_conflict_and_writes_nothing(
        self, store: ClientStore
    ) -> None:
        await store.write(_write("todos", "insert", "t1", {"title": "a"}))
        with pytest.raises(Conflict):
            await store.write(_write("todos", "insert", "t1", {"title": "b"}))
        assert (await store.get("todos", "t1")) == {"id": "t1", "title": "a"}
        assert await store.pending_count() == 1

    async def test_a_write_and_its_changelog_entry_commit_together(
        self, store: ClientStore
    ) -> None:
        await store.write(_write("todos", "insert", "t1", {"title": "a"}, mutation_id="m1"))
        # the changelog refuses a second m1: the record write must be undone with it
        with pytest.raises(DatafnError):
            await store.write(_write("todos", "replace", "t1", {"title": "b"}, mutation_id="m1"))
        assert await store.get("todos", "t1") == {"id": "t1", "title": "a"}
        assert await store.pending_count() == 1

    async def test_acknowledge_removes_exactly_the_given_entries(self, store: ClientStore) -> None:
        for i in range(5):
            await store.write(_write("notes", "insert", f"n{i}", {"body": str(i)}))
        await store.write(_write("todos", "insert", "t1", {"title": "a"}))
        entries = await store.changelog()
        await store.acknowledge([entries[0].seq, entries[2].seq])
        left = await store.changelog()
        assert [e.record_id for e in left] == ["n1", "n3", "n4", "t1"]
        assert [e.record_id for e in await store.changelog(resource="todos")] == ["t1"]
        await store.acknowledge([])
        assert await store.pending_count() == 4

    async def test_acknowledged_writes_move_into_the_base_refused_ones_leave_the_view(
        self, store: ClientStore
    ) -> None:
        await store.apply_pull(
            PullPage(records={"todos": [{"id": "t1", "title": "server"}]}, cursors={"todos": 1})
        )
        await store.write(_write("todos", "merge", "t1", {"title": "first"}))
        await store.write(_write("todos", "merge", "t1", {"done": True}))
        await store.write(_write("todos", "merge", "t1", {"priority": 3}))
        first, second, third = await store.changelog()
        await store.acknowledge([first.seq])  # applied: "first" is the server's now
        assert await store.reject([second.seq]) == set()  # refused: done leaves the view
        assert await store.get("todos", "t1") == {"id": "t1", "title": "first", "priority": 3}
        assert [e.seq for e in await store.changelog()] == [third.seq]
        assert await store.reject([third.seq]) == set()
        assert await store.get("todos", "t1") == {"id": "t1", "title": "first"}
        assert await store.pending_count() == 0

    async def test_a_refused_insert_removes_the_record_a_refused_delete_brings_it_back(
        self, store: ClientStore
    ) -> None:
        await store.apply_pull(
            PullPage(records={"todos": [{"id": "t1", "title": "kept"}]}, cursors={"todos": 1})
        )
        await store.write(_write("todos", "insert", "t2", {"title": "new"}))
        await store.write(_write("todos", "delete", "t1"))
        insert, delete = await store.changelog()
        await store.reject([insert.seq, delete.seq])
        assert await store.get("todos", "t2") is None
        assert await store.get("todos", "t1") == {"id": "t1", "title": "kept"}

    async def test_a_pulled_merge_applies_to_the_base_not_to_the_local_view(
        self, store: ClientStore
    ) -> None:
        await store.apply_pull(
            PullPage(records={"todos": [{"id": "t1", "title": "a"}]}, cursors={"todos": 1})
        )
        await store.write(_write("todos", "merge", "t1", {"title": "mine", "done": False}))
        await store.apply_pull(
            PullPage(merged={"todos": [{"id": "t1", "done": True}]}, cursors={"todos": 2})
        )
        # the local view: the server's record with my queued write on top
        assert await store.get("todos", "t1") == {"id": "t1", "title": "mine", "done": False}
        (entry,) = await store.changelog()
        await store.reject([entry.seq])
        # the server's record: "a" (never "mine"), done as pulled
        assert await store.get("todos", "t1") == {"id": "t1", "title": "a", "done": True}

    async def test_a_clone_sets_the_base_of_records_it_brings_and_of_those_it_lacks(
        self, store: ClientStore
    ) -> None:
        await store.write(_write("notes", "merge", "n1", {"body": "mine"}))
        await store.write(_write("notes", "insert", "n2", {"body": "local only"}))
        await store.apply_clone_page(
            "notes", [{"id": "n1", "body": "server"}], after_id="n1", start_cursor=5, reset=True
        )
        await store.finish_clone("notes")
        assert await store.get("notes", "n1") == {"id": "n1", "body": "mine"}
        assert await store.reject([e.seq for e in await store.changelog()]) == set()
        assert await store.get("notes", "n1") == {"id": "n1", "body": "server"}
        assert await store.get("notes", "n2") is None

    async def test_dead_letters_leave_the_queue_and_can_be_discarded(
        self, store: ClientStore
    ) -> None:
        await store.write(_write("todos", "insert", "t1", {"title": "a"}, mutation_id="m1"))
        await store.write(_write("todos", "insert", "t2", {"title": "b"}, mutation_id="m2"))
        first, second = await store.changelog()
        await store.record_attempt([first.seq, second.seq], "INTERNAL: down")
        (attempted, _) = await store.changelog()
        assert (attempted.attempts, attempted.last_error) == (1, "INTERNAL: down")
        assert await store.dead_letter([first.seq], "FORBIDDEN: no") == set()
        assert [e.mutation_id for e in await store.changelog()] == ["m2"]
        assert await store.pending_count() == 1
        (dead,) = await store.dead_letters()
        assert (dead.mutation_id, dead.state, dead.last_error) == ("m1", "dead", "FORBIDDEN: no")
        assert await store.get("todos", "t1") is None  # out of the local view
        removed, recloned = await store.discard("m1")
        assert removed is not None and removed.mutation_id == "m1" and recloned == set()
        assert await store.dead_letters() == []
        removed, _ = await store.discard("m2")  # a queued write
        assert removed is not None and await store.get("todos", "t2") is None
        assert await store.discard("m2") == (None, set())
        assert await store.pending_count() == 0

    async def test_unsynced_records_are_what_no_queued_write_accounts_for(
        self, store: ClientStore
    ) -> None:
        for i in range(4):
            await store.write(_write("notes", "insert", f"n{i}", {"body": f"imported {i}"}))
        await store.acknowledge([e.seq for e in await store.changelog()])
        await store.write(_write("notes", "merge", "n1", {"body": "changed"}))
        await store.write(_write("notes", "insert", "n5", {"body": "new"}))
        records, after = await store.unsynced_records("notes", None, 3)
        assert after == "n2"
        assert records == [
            {"id": "n0", "body": "imported 0"},
            {"id": "n1", "body": "imported 1"},  # as it was before the queued merge
            {"id": "n2", "body": "imported 2"},
        ]
        records, after = await store.unsynced_records("notes", "n2", 3)
        assert (records, after) == ([{"id": "n3", "body": "imported 3"}], None)  # n5: a write

    async def test_synced_records_between_reads_a_range_as_the_server_should_hold_it(
        self, store: ClientStore
    ) -> None:
        for i in range(6):
            await store.write(_write("notes", "insert", f"n{i}", {"body": f"imported {i}"}))
        await store.acknowledge([e.seq for e in await store.changelog()])
        await store.write(_write("notes", "merge", "n2", {"body": "changed"}))
        await store.write(_write("notes", "insert", "n2a", {"body": "new"}))
        records, last = await store.synced_records_between("notes", "n0", "n4", 10)
        assert last is None
        assert records == [
            {"id": "n1", "body": "imported 1"},
            {"id": "n2", "body": "imported 2"},  # as it was before the queued merge
            {"id": "n3", "body": "imported 3"},  # n2a: only a queued write made it
            {"id": "n4", "body": "imported 4"},
        ]
        records, last = await store.synced_records_between("notes", None, None, 2)
        assert [r["id"] for r in records] == ["n0", "n1"] and last == "n1"
        records, last = await store.synced_records_between("notes", "n4", None, 2)
        assert [r["id"] for r in records] == ["n5"] and last is None
        await store.write(_write("notes", "delete", "n5", None))
        await store.acknowledge([e.seq for e in await store.changelog()])
        await store.write(_write("notes", "insert", "n6", {"body": "late"}))
        await store.acknowledge([e.seq for e in await store.changelog()])
        records, last = await store.synced_records_between("notes", "n3", None, 10)
        assert [r["id"] for r in records] == ["n4", "n6"] and last is None

    async def test_records_after_pages_by_id(self, store: ClientStore) -> None:
        for i in (3, 1, 2, 5, 4):
            await store.write(_write("notes", "insert", f"n{i}", {"body": str(i)}))
        first = await store.records_after("notes", None, 2)
        assert [r["id"] for r in first] == ["n1", "n2"]
        rest = await store.records_after("notes", "n2", 10)
        assert [r["id"] for r in rest] == ["n3", "n4", "n5"]
        assert await store.count("notes") == 5

    async def test_queries_agree_with_the_reference_semantics(self, store: ClientStore) -> None:
        rows: list[dict[str, Any]] = []
        for i in range(12):
            record: dict[str, Any] = {
                "title": f"task {i % 5}",
                "done": i % 3 == 0,
                "priority": None if i % 4 == 0 else i % 4,
                "tags": ["even"] if i % 2 == 0 else ["odd"],
            }
            after, _ = await store.write(_write("todos", "insert", f"t{i:02}", record))
            assert after is not None
            rows.append(after)
        queries = [
            Query(),
            Query(filters={"done": True}),
            Query(filters={"priority": None}),
            Query(filters={"priority": {"ne": None}}, sort=("-priority",)),
            Query(filters={"priority": {"gte": 2}}, sort=("priority", "-title")),
            Query(filters={"priority": {"lt": 2}}),
            Query(filters={"priority": {"in": [1, 3]}}),
            Query(filters={"priority": {"nin": [1, 3]}}),
            Query(filters={"priority": {"in": []}}),
            Query(filters={"title": {"contains": "task 1"}}),
            Query(filters={"tags": {"contains": "even"}}),
            Query(filters={"id": {"gt": "t05"}}, limit=3),
            Query(sort=("title",), limit=4, offset=3),
            Query(sort=("-title", "priority"), offset=10),
            Query(sort=("tags",)),
            Query(filters={"done": False, "title": "task 2"}),
        ]
        for query in queries:
            expected = [r for r in rows if matches(r, query.conditions())]
            sort_records(expected, query.sort_keys())
            end = None if query.limit is None else query.offset + query.limit
            expected = expected[query.offset : end]
            got = await store.query("todos", query)
            assert [r["id"] for r in got] == [r["id"] for r in expected], query
        with pytest.raises(ValidationFailed):
            await store.query("todos", Query(filters={"title": {"like": "x"}}))

    # -- sync state ----------------------------------------------------------------------------

    async def test_states_default_to_not_started(self, store: ClientStore) -> None:
        states = await store.states(["todos", "notes"])
        assert {r: (s.hydration, s.cursor) for r, s in states.items()} == {
            "todos": ("notStarted", 0),
            "notes": ("notStarted", 0),
        }

    async def test_apply_pull_applies_everything_and_moves_cursors_forward_only(
        self, store: ClientStore
    ) -> None:
        await store.apply_pull(
            PullPage(
                records={"todos": [{"id": "t1", "title": "a", "done": False}]},
                cursors={"todos": 5},
            )
        )
        await store.apply_pull(
            PullPage(
                records={"notes": [{"id": "n1", "body": "x"}]},
                merged={"todos": [{"id": "t1", "done": True}, {"id": "t2", "title": "new"}]},
                cursors={"todos": 7, "notes": 3},
            )
        )
        assert await store.get("todos", "t1") == {"id": "t1", "title": "a", "done": True}
        assert await store.get("todos", "t2") == {"id": "t2", "title": "new"}
        await store.apply_pull(PullPage(deleted={"todos": ["t1", "missing"]}, cursors={"todos": 2}))
        assert await store.get("todos", "t1") is None
        states = await store.states(["todos", "notes"])
        assert (states["todos"].cursor, states["notes"].cursor) == (7, 3)
        await store.apply_pull(PullPage(cursors={"todos": 9, "notes": 1}))
        states = await store.states(["todos", "notes"])
        assert (states["todos"].cursor, states["notes"].cursor) == (9, 3)
        assert await store.pending_count() == 0  # server data is not a local write

    async def test_a_pull_page_and_its_cursors_commit_together(self, store: ClientStore) -> None:
        with pytest.raises(DatafnError):
            await store.apply_pull(
                PullPage(
                    records={"todos": [{"id": "t1", "title": "a"}], "nope": [{"id": "x"}]},
                    cursors={"todos": 5},
                )
            )
        assert await store.get("todos", "t1") is None
        assert (await store.states(["todos"]))["todos"].cursor == 0

    async def test_pulled_data_is_rebased_under_pending_writes(self, store: ClientStore) -> None:
        await store.apply_pull(
            PullPage(records={"todos": [{"id": "t1", "title": "a"}]}, cursors={"todos": 1})
        )
        await store.write(_write("todos", "merge", "t1", {"done": True}))
        await store.write(_write("todos", "delete", "t3"))
        await store.apply_pull(
            PullPage(
                records={"todos": [{"id": "t1", "title": "server"}, {"id": "t3", "title": "c"}]},
                cursors={"todos": 2},
            )
        )
        assert await store.get("todos", "t1") == {"id": "t1", "title": "server", "done": True}
        assert await store.get("todos", "t3") is None  # still deleted locally

    async def test_clone_pages_resume_and_finish(self, store: ClientStore) -> None:
        await store.write(_write("notes", "insert", "local", {"body": "mine"}))
        await store.apply_clone_page(
            "notes",
            [{"id": "a", "body": "1"}, {"id": "b", "body": "2"}],
            after_id="b",
            start_cursor=40,
            reset=True,
        )
        state = (await store.states(["notes"]))["notes"]
        assert (state.hydration, state.clone_after_id, state.clone_cursor) == (
            "hydrating",
            "b",
            40,
        )
        await store.apply_clone_page("notes", [{"id": "c", "body": "3"}], after_id="c")
        await store.finish_clone("notes")
        state = (await store.states(["notes"]))["notes"]
        assert (state.hydration, state.cursor, state.clone_after_id) == ("ready", 40, None)
        ids = [r["id"] for r in await store.query("notes", Query())]
        assert ids == ["a", "b", "c", "local"]  # the pending local insert was rebased
        await store.reset_hydration("notes")
        state = (await store.states(["notes"]))["notes"]
        # marked for a re-clone, not "never hydrated": its records are kept until replaced
        assert (state.hydration, state.cursor, state.clone_cursor) == ("hydrating", 40, None)
        assert await store.count("notes") == 4

    async def test_a_write_remembers_the_cursor_it_was_made_at(self, store: ClientStore) -> None:
        # not hydrated yet: no base (the server detects no conflict for it)
        _, before = await store.write(_write("notes", "insert", "n0", {"body": "x"}))
        assert before.base_seq is None and "baseSeq" not in before.to_mutation("c")
        await store.apply_clone_page("notes", [], after_id=None, start_cursor=7, reset=True)
        await store.finish_clone("notes")
        _, at_clone = await store.write(_write("notes", "merge", "n0", {"body": "y"}))
        await store.apply_pull(PullPage(cursors={"notes": 12}))
        _, at_pull = await store.write(_write("notes", "merge", "n0", {"body": "z"}))
        assert (at_clone.base_seq, at_pull.base_seq) == (7, 12)
        assert at_pull.to_mutation("c")["baseSeq"] == 12
        # kept with the queued entries, and with a dead letter
        assert [e.base_seq for e in await store.changelog()] == [None, 7, 12]
        await store.dead_letter([at_pull.seq], "CONFLICT: changed after baseSeq 12")
        assert [e.base_seq for e in await store.dead_letters()] == [12]

    async def test_a_reclone_clears_stale_records(self, store: ClientStore) -> None:
        await store.apply_pull(
            PullPage(records={"notes": [{"id": "stale", "body": "x"}]}, cursors={"notes": 3})
        )
        await store.apply_clone_page(
            "notes", [{"id": "a", "body": "1"}], after_id="a", start_cursor=9, reset=True
        )
        await store.finish_clone("notes")
        assert [r["id"] for r in await store.query("notes", Query())] == ["a"]
        assert (await store.states(["notes"]))["notes"].cursor == 9

    async def test_a_reclone_takes_the_servers_cursor_even_below_the_old_one(
        self, store: ClientStore
    ) -> None:
        # the server was restored from a backup: its change log stands below this cursor
        await store.apply_pull(
            PullPage(records={"notes": [{"id": "a", "body": "new"}]}, cursors={"notes": 20})
        )
        await store.apply_clone_page(
            "notes", [{"id": "a", "body": "old"}], after_id="a", start_cursor=10, reset=True
        )
        await store.finish_clone("notes")
        # pulls go on from 10, so the restored server's next change (11) is not skipped
        assert (await store.states(["notes"]))["notes"].cursor == 10
        assert await store.get("notes", "a") == {"id": "a", "body": "old"}

    async def test_durable_across_reopen(self, store_factory: StoreFactory, schema: Schema) -> None:
        if not self.durable:
            pytest.skip("this store keeps nothing across a reopen")
        first = store_factory(schema)
        await first.open()
        await first.write(_write("todos", "insert", "t1", {"title": "a"}))
        await first.apply_clone_page(
            "notes", [{"id": "a", "body": "1"}], after_id="a", start_cursor=4
        )
        await first.set_meta("client_id", "c1")
        await first.aclose()
        second = store_factory(schema)
        await second.open()
        try:
            assert await second.get("todos", "t1") == {"id": "t1", "title": "a"}
            assert [e.record_id for e in await second.changelog()] == ["t1"]
            state = (await second.states(["notes"]))["notes"]
            assert (state.hydration, state.clone_after_id) == ("hydrating", "a")
            assert await second.get_meta("client_id") == "c1"
        finally:
            await second.aclose()
