"""The conformance suite every server store runs (memory, SQLite, PostgreSQL, yours).

Subclass :class:`ServerStoreSuite` in a test module and provide the ``make_store`` fixture,
a factory ``make_store(schema) -> ServerStore`` (not yet opened) whose stores share one
database, so that reopening sees the data::

    from datafn.testing.server_store import ServerStoreSuite

    class TestMyStore(ServerStoreSuite):
        persistent = True        # stores built by make_store see each other's data

        @pytest.fixture
        def make_store(self, tmp_path):
            url = f"mystore://{tmp_path}/db"
            return lambda schema: MyStore(url, schema)

The tests are async (pytest-asyncio in auto mode, or mark the module).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from datafn.schema import Schema, load_schema
from datafn.server.store import Change, MutationError, PendingMutation, ServerStore

__all__ = ["SCHEMA", "ServerStoreSuite", "pending"]

#: The schema the suite runs with.
SCHEMA: dict[str, Any] = {
    "resources": [
        {
            "name": "todos",
            "fields": [
                {"name": "title", "type": "string"},
                {"name": "done", "type": "boolean", "default": False},
                {"name": "rank", "type": "number"},
                {"name": "meta", "type": "json"},
            ],
        },
        {"name": "notes", "fields": [{"name": "body", "type": "string"}]},
    ]
}

MakeStore = Callable[[Schema], ServerStore]


def pending(
    op: str,
    record_id: str,
    record: dict[str, Any] | None = None,
    *,
    resource: str = "todos",
    mid: str | None = None,
    guard: dict[str, Any] | None = None,
    error: MutationError | None = None,
) -> PendingMutation:
    """A validated mutation as the server hands it to a store."""
    if record is not None:
        record = {"id": record_id, **record}
    return PendingMutation(
        mutation_id=mid or f"{op}-{record_id}",
        resource=resource,
        operation=op,  # type: ignore[arg-type]
        id=record_id,
        record=record,
        guard=guard,
        error=error,
    )


class ServerStoreSuite:
    """Behaviour every :class:`~datafn.server.store.ServerStore` must have."""

    #: True when two stores built by ``make_store`` share their data (a database file/URL).
    persistent: bool = False

    @pytest.fixture
    def make_store(self) -> MakeStore:  # pragma: no cover - provided by subclasses
        raise NotImplementedError("provide a make_store fixture")

    @pytest.fixture
    async def store(self, make_store: MakeStore) -> AsyncIterator[ServerStore]:
        store = make_store(load_schema(SCHEMA))
        async with store:
            yield store

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    async def records(
        store: ServerStore, namespace: str = "ns", resource: str = "todos"
    ) -> dict[str, Any]:
        return {r["id"]: r for r in await store.clone_page(namespace, resource, None, 100_000)}

    # -- basics ------------------------------------------------------------------------------

    async def test_an_empty_namespace(self, store: ServerStore) -> None:
        assert await store.latest_seq("ns", ["todos", "notes"]) == {"todos": 0, "notes": 0}
        assert await store.counts("ns", ["todos"]) == {"todos": 0}
        assert await store.changes_since("ns", {"todos": 0}, 10) == []
        assert await store.clone_page("ns", "todos", None, 10) == []
        assert await store.namespace_seq("ns") == 0

    async def test_open_and_close_are_idempotent(self, make_store: MakeStore) -> None:
        store = make_store(load_schema(SCHEMA))
        await store.open()
        await store.open()
        await store.aclose()
        await store.aclose()

    async def test_push_applies_and_logs_in_seq_order(self, store: ServerStore) -> None:
        outcome = await store.apply_push(
            "ns",
            "c1",
            [
                pending("insert", "a", {"title": "a"}),
                pending("insert", "n", {"body": "x"}, resource="notes"),
                pending("merge", "a", {"done": True}),
                pending("delete", "a"),
                pending("replace", "b", {"title": "b", "meta": {"k": [1, 2.5, None, "é"]}}),
            ],
        )
        assert outcome.results == [None] * 5
        assert (outcome.cursor_before, outcome.cursor) == (0, 5)
        assert outcome.cursors == {"todos": 5, "notes": 2}
        changes = await store.changes_since("ns", {"todos": 0, "notes": 0}, 100)
        assert changes == [
            Change(1, "todos", "a", "insert", {"id": "a", "title": "a"}),
            Change(2, "notes", "n", "insert", {"id": "n", "body": "x"}),
            Change(3, "todos", "a", "merge", {"id": "a", "done": True}),
            Change(4, "todos", "a", "delete", None),
            Change(
                5,
                "todos",
                "b",
                "replace",
                {"id": "b", "title": "b", "meta": {"k": [1, 2.5, None, "é"]}},
            ),
        ]
        assert await self.records(store) == {
            "b": {"id": "b", "title": "b", "meta": {"k": [1, 2.5, None, "é"]}}
        }
        assert await store.latest_seq("ns", ["todos", "notes"]) == {"todos": 5, "notes": 2}
        assert await store.counts("ns", ["todos", "notes"]) == {"todos": 1, "notes": 1}
        assert await store.namespace_seq("ns") == 5

    async def test_insert_existing_identical_is_noop_different_is_conflict(
        self, store: ServerStore
    ) -> None:
        await store.apply_push("ns", "c", [pending("insert", "a", {"title": "a"})])
        outcome = await store.apply_push(
            "ns",
            "c",
            [
                pending("insert", "a", {"title": "a"}, mid="same"),
                pending("insert", "a", {"title": "z"}, mid="diff"),
            ],
        )
        assert outcome.results[0] is None
        assert outcome.results[1] is not None and outcome.results[1].code == "CONFLICT"
        assert outcome.results[1].path == "id" and not outcome.results[1].retryable
        assert outcome.cursor == outcome.cursor_before == 1

    async def test_merge_creates_with_defaults_and_delete_of_missing_logs_nothing(
        self, store: ServerStore
    ) -> None:
        outcome = await store.apply_push(
            "ns", "c", [pending("merge", "m", {"title": "t"}), pending("delete", "ghost")]
        )
        assert outcome.results == [None, None] and outcome.cursor == 1
        assert (await self.records(store))["m"] == {"id": "m", "title": "t", "done": False}
        changes = await store.changes_since("ns", {"todos": 0}, 10)
        assert [(c.op, c.id) for c in changes] == [("insert", "m")]

    async def test_if_guards(self, store: ServerStore) -> None:
        await store.apply_push("ns", "c", [pending("insert", "a", {"title": "a", "rank": 1})])
        outcome = await store.apply_push(
            "ns",
            "c",
            [
                pending("merge", "a", {"rank": 2}, mid="ok", guard={"rank": 1.0, "done": None}),
                pending("merge", "a", {"rank": 3}, mid="stale", guard={"rank": 1}),
                pending("delete", "nope", mid="missing", guard={"rank": 1}),
            ],
        )
        assert outcome.results[0] is None
        assert [r.code if r else None for r in outcome.results[1:]] == ["CONFLICT", "CONFLICT"]
        assert outcome.results[2] is not None and outcome.results[2].path == "if"
        assert (await self.records(store))["a"]["rank"] == 2

    async def test_idempotency(self, store: ServerStore) -> None:
        batch = [pending("insert", "a", {"title": "a"}), pending("merge", "a", {"rank": 1})]
        await store.apply_push("ns", "c", batch)
        await store.apply_push("ns", "c", [pending("merge", "a", {"rank": 9}, mid="later")])
        conflict = await store.apply_push(
            "ns", "c", [pending("insert", "a", {"title": "q"}, mid="bad")]
        )
        replay = await store.apply_push(
            "ns", "c", [*batch, pending("insert", "a", {"title": "q"}, mid="bad")]
        )
        assert replay.results[:2] == [None, None]
        assert replay.results[2] == conflict.results[0]
        assert replay.cursor == replay.cursor_before == 3
        assert (await self.records(store))["a"]["rank"] == 9
        other_client = await store.apply_push("ns", "other", [pending("merge", "a", {"rank": 1})])
        assert other_client.cursor == 4

    async def test_validation_failures_apply_nothing_and_are_not_recorded(
        self, store: ServerStore
    ) -> None:
        error = MutationError("DFQL_INVALID", "bad", "mutations[0].record.title")
        outcome = await store.apply_push("ns", "c", [pending("insert", "a", mid="m", error=error)])
        assert outcome.results == [error] and outcome.cursor == 0
        later = await store.apply_push(
            "ns", "c", [pending("insert", "a", {"title": "ok"}, mid="m")]
        )
        assert later.results == [None] and later.cursor == 1
        again = await store.apply_push("ns", "c", [pending("insert", "a", mid="m", error=error)])
        assert again.results == [None]  # a replay of an applied mutation stays applied

    async def test_the_same_mutation_twice_in_a_batch_applies_once(
        self, store: ServerStore
    ) -> None:
        outcome = await store.apply_push(
            "ns",
            "c",
            [
                pending("insert", "a", {"title": "a"}, mid="m"),
                pending("replace", "a", {"title": "b"}, mid="m"),
            ],
        )
        assert outcome.results == [None, None] and outcome.cursor == 1
        assert (await self.records(store))["a"]["title"] == "a"

    async def test_seed_inserts_only_missing_records(self, store: ServerStore) -> None:
        await store.apply_push("ns", "c", [pending("insert", "a", {"title": "mine"})])
        inserted = await store.seed(
            "ns",
            {
                "todos": [
                    {"id": "a", "title": "seed"},
                    {"id": "b", "title": "seed"},
                    {"id": "b", "title": "dup"},
                ],
                "notes": [],
            },
        )
        assert inserted == {"todos": 1, "notes": 0}
        assert {k: v["title"] for k, v in (await self.records(store)).items()} == {
            "a": "mine",
            "b": "seed",
        }
        assert [c.seq for c in await store.changes_since("ns", {"todos": 0}, 10)] == [1, 2]
        assert await store.namespace_seq("ns") == 2

    # -- reads -------------------------------------------------------------------------------

    async def test_changes_since_merges_resources_by_seq_with_a_limit(
        self, store: ServerStore
    ) -> None:
        batch = []
        for i in range(12):
            resource = "todos" if i % 3 else "notes"
            record = {"title": str(i)} if resource == "todos" else {"body": str(i)}
            batch.append(pending("insert", f"r{i:02d}", record, resource=resource))
        await store.apply_push("ns", "c", batch)
        changes = await store.changes_since("ns", {"todos": 4, "notes": 1}, 5)
        assert [c.seq for c in changes] == [4, 5, 6, 7, 8]  # todos > 4, notes > 1 merged
        assert [c.resource for c in changes] == ["notes", "todos", "todos", "notes", "todos"]
        assert [c.seq for c in await store.changes_since("ns", {"notes": 0}, 100)] == [1, 4, 7, 10]
        assert await store.changes_since("ns", {"todos": 12}, 5) == []
        assert await store.changes_since("ns", {}, 5) == []

    async def test_clone_page_at_agrees_with_latest_seq_and_clone_page(
        self, store: ServerStore
    ) -> None:
        assert await store.clone_page_at("ns", "todos", None, 10) == (0, [])
        await store.apply_push(
            "ns", "c", [pending("insert", f"t{i}", {"title": str(i)}) for i in range(5)]
        )
        await store.apply_push(
            "ns", "c", [pending("insert", "n1", {"body": "x"}, resource="notes")]
        )
        await store.apply_push("other", "c", [pending("insert", "t9", {"title": "elsewhere"})])
        seq, page = await store.clone_page_at("ns", "todos", "t1", 2)
        assert seq == (await store.latest_seq("ns", ["todos"]))["todos"] == 5
        assert page == await store.clone_page("ns", "todos", "t1", 2)
        assert [r["id"] for r in page] == ["t2", "t3"]

    async def test_clone_pages_in_code_point_order(self, store: ServerStore) -> None:
        ids = ["b", "a", "B", "a b", "a-b", "é", "z", "Z9", "日本", "😀", "a\tb", "0", "~"]
        await store.apply_push(
            "ns", "c", [pending("insert", i, {"title": i}, mid=f"m{n}") for n, i in enumerate(ids)]
        )
        expected = sorted(ids)
        assert [r["id"] for r in await store.clone_page("ns", "todos", None, 100)] == expected
        got: list[str] = []
        after = None
        while True:
            page = await store.clone_page("ns", "todos", after, 4)
            got += [r["id"] for r in page]
            if len(page) < 4:
                break
            after = page[-1]["id"]
        assert got == expected
        assert [r["id"] for r in await store.clone_page("ns", "todos", "a", 2)] == ["a\tb", "a b"]

    async def test_values_round_trip(self, store: ServerStore) -> None:
        meta = {
            "nested": {"deep": [[[{"x": 1}]]]},
            "int": 2**62,
            "neg": -(2**62),
            "float": 0.1,
            "exp": 1e300,
            "text": 'quote" backslash\\ nul\u0000 emoji😀 rtl\u202e',
            "empty": {},
            "list": [],
            "bool": False,
            "null": None,
        }
        await store.apply_push("ns", "c", [pending("insert", "a", {"title": "", "meta": meta})])
        assert (await self.records(store))["a"]["meta"] == meta
        change = (await store.changes_since("ns", {"todos": 0}, 1))[0]
        assert change.data == {"id": "a", "title": "", "meta": meta}

    async def test_large_batches(self, store: ServerStore) -> None:
        batch = [
            pending("insert", f"t{i:04d}", {"title": "x" * 50, "rank": i}) for i in range(1200)
        ]
        outcome = await store.apply_push("ns", "c", batch)
        assert outcome.cursor == 1200 and all(r is None for r in outcome.results)
        replay = await store.apply_push("ns", "c", batch)
        assert replay.cursor == 1200
        assert (await store.counts("ns", ["todos"]))["todos"] == 1200
        assert len(await store.changes_since("ns", {"todos": 100}, 5000)) == 1100

    # -- isolation ---------------------------------------------------------------------------

    async def test_namespaces_are_isolated(self, store: ServerStore) -> None:
        await store.apply_push("A", "c", [pending("insert", "a", {"title": "A"}, mid="m")])
        other = await store.apply_push("B", "c", [pending("insert", "a", {"title": "B"}, mid="m")])
        assert other.results == [None] and (other.cursor_before, other.cursor) == (0, 1)
        await store.apply_push("B", "c", [pending("insert", "b", {"title": "B"})])
        assert await self.records(store, "A") == {"a": {"id": "a", "title": "A"}}
        assert set(await self.records(store, "B")) == {"a", "b"}
        assert [c.id for c in await store.changes_since("A", {"todos": 0}, 10)] == ["a"]
        assert await store.latest_seq("A", ["todos"]) == {"todos": 1}
        assert await store.latest_seq("B", ["todos"]) == {"todos": 2}
        assert await store.counts("A", ["todos"]) == {"todos": 1}
        await store.seed("A", {"todos": [{"id": "b", "title": "seedA"}]})
        assert (await self.records(store, "B"))["b"]["title"] == "B"
        assert await store.namespace_seq("C") == 0

    # -- concurrency: the visibility rule ----------------------------------------------------

    async def test_concurrent_writers_never_let_a_reader_skip_a_seq(
        self, store: ServerStore
    ) -> None:
        writers, batches, size = 6, 8, 5
        done = anyio.Event()
        problems: list[str] = []
        cursors = {"todos": 0, "notes": 0}
        seen: list[int] = []

        async def writer(w: int) -> None:
            rng = random.Random(w)
            for b in range(batches):
                batch = []
                for i in range(size):
                    resource = rng.choice(["todos", "notes"])
                    record = {"title": "x"} if resource == "todos" else {"body": "x"}
                    batch.append(pending("insert", f"w{w}b{b}i{i}", record, resource=resource))
                await store.apply_push("ns", f"client{w}", batch)

        async def reader() -> None:
            while True:
                finished = done.is_set()
                changes = await store.changes_since("ns", cursors, 7)
                for change in changes:
                    if change.seq <= cursors[change.resource]:
                        problems.append(f"seq {change.seq} served again")
                    cursors[change.resource] = change.seq
                    seen.append(change.seq)
                expected = list(range(len(seen) - len(changes) + 1, len(seen) + 1))
                if [c.seq for c in changes] != expected:
                    problems.append(f"gap: got {[c.seq for c in changes]}, expected {expected}")
                if finished and not changes:
                    return
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            async with anyio.create_task_group() as inner:
                for w in range(writers):
                    inner.start_soon(writer, w)
            done.set()
        assert problems == []
        assert seen == list(range(1, writers * batches * size + 1))
        assert await store.namespace_seq("ns") == writers * batches * size

    # -- persistence -------------------------------------------------------------------------

    async def test_reopening_keeps_data_and_adds_new_resources(self, make_store: MakeStore) -> None:
        if not self.persistent:
            pytest.skip("this store does not persist between instances")
        async with make_store(load_schema(SCHEMA)) as first:
            await first.apply_push("ns", "c", [pending("insert", "a", {"title": "kept"}, mid="m")])
        grown = {
            "resources": [
                *SCHEMA["resources"],
                {"name": "tags", "fields": [{"name": "label", "type": "string"}]},
            ]
        }
        async with make_store(load_schema(grown)) as second:
            assert (await self.records(second))["a"]["title"] == "kept"
            replay = await second.apply_push(
                "ns", "c", [pending("insert", "a", {"title": "kept"}, mid="m")]
            )
            assert replay.cursor == replay.cursor_before == 1
            outcome = await second.apply_push(
                "ns", "c", [pending("insert", "t", {"label": "x"}, resource="tags")]
            )
            assert outcome.cursor == 2
            assert await second.counts("ns", ["tags", "todos"]) == {"tags": 1, "todos": 1}
