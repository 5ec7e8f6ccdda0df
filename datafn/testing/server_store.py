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

import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from datafn.config import RetentionSettings
from datafn.schema import Schema, load_schema
from datafn.server.retention import run_retention
from datafn.server.service import fold_changes
from datafn.server.store import (
    EXPIRE_ID,
    Change,
    CompactionStep,
    MutationError,
    PendingMutation,
    ServerStore,
)
from datafn.testing.server_conflicts import ConflictSuite

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


class ServerStoreSuite(ConflictSuite):
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

    async def test_records_between_reads_an_id_range_in_order(self, store: ServerStore) -> None:
        ids = ["b", "a", "B", "a b", "é", "z", "0", "~", "日本"]
        await store.apply_push(
            "ns", "c", [pending("insert", i, {"title": i}, mid=f"m{n}") for n, i in enumerate(ids)]
        )
        await store.apply_push("other", "c", [pending("insert", "a c", {"title": "elsewhere"})])
        ordered = sorted(ids)

        async def between(after: str | None, until: str | None, limit: int = 100) -> list[str]:
            rows = await store.records_between("ns", "todos", after, until, limit)
            return [r["id"] for r in rows]

        assert await between(None, None) == ordered
        assert await between("a", "z") == [i for i in ordered if "a" < i <= "z"]
        assert await between(None, "a b") == [i for i in ordered if i <= "a b"]
        assert await between("z", None) == [i for i in ordered if i > "z"]
        assert await between("a", "z", 2) == [i for i in ordered if "a" < i <= "z"][:2]
        assert await between("b", "b ") == []
        rows = await store.records_between("ns", "todos", "a", "b", 10)
        assert list(rows) == list(await store.clone_page("ns", "todos", "a", 2))

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

    # -- retention (docs/server.md, "Retention") ---------------------------------------------

    async def test_retention_keeps_idempotency_records_inside_the_window(
        self, store: ServerStore
    ) -> None:
        batch = [pending("insert", "a", {"title": "a"}), pending("merge", "a", {"rank": 1})]
        await store.apply_push("ns", "c", batch)
        window = RetentionSettings(idempotency_window=3600)
        assert (await run_retention(store, window)).idempotency == 0
        replay = await store.apply_push("ns", "c", batch)
        assert replay.results == [None, None]
        assert replay.cursor == replay.cursor_before == 2  # deduplicated: nothing applied
        # past the window the records are gone, and a replay is a new write: the insert of a
        # record that changed since is a conflict, the merge is applied (and logged) again
        later = await run_retention(store, window, now=time.time() + 3601)
        assert later.idempotency == 2
        again = await store.apply_push("ns", "c", batch)
        assert again.results[0] is not None and again.results[0].code == "CONFLICT"
        assert again.results[1] is None and again.cursor == 3

    async def test_retention_works_in_batches(self, store: ServerStore) -> None:
        await store.apply_push(
            "ns", "c", [pending("insert", f"t{i:02d}", {"title": "x"}) for i in range(55)]
        )
        pruned: list[int] = []
        steps: list[CompactionStep] = []
        prune, compact = store.prune_idempotency, store.compact_changes

        async def counted_prune(before: float, limit: int) -> int:
            pruned.append(await prune(before, limit))
            return pruned[-1]

        async def counted_compact(namespace: str, horizon: int, limit: int) -> CompactionStep:
            steps.append(await compact(namespace, horizon, limit))
            return steps[-1]

        store.prune_idempotency = counted_prune  # type: ignore[method-assign]
        store.compact_changes = counted_compact  # type: ignore[method-assign]
        settings = RetentionSettings(idempotency_window=60, change_log_horizon=0)
        report = await run_retention(store, settings, now=time.time() + 61, batch_size=10)
        assert pruned == [10, 10, 10, 10, 10, 5] and report.idempotency == 55
        assert [step.examined for step in steps] == [10, 10, 10, 10, 10, 5]
        assert [step.done for step in steps] == [False] * 5 + [True]
        assert len(await store.changes_since("ns", {"todos": 0}, 100)) == 55  # all distinct
        assert await store.apply_push("ns", "c", [pending("insert", "t00", {"title": "x"})])

    async def test_compaction_bounds_the_change_log_and_every_cursor_still_converges(
        self, store: ServerStore
    ) -> None:
        ids = [f"r{i}" for i in range(10)]
        await store.apply_push("ns", "c", [pending("insert", i, {"title": i}) for i in ids])
        batch: list[PendingMutation] = []
        for n in range(1, 1000):  # 10 records updated 1000 times in all
            for i in ids:
                if n % 250 == 0:
                    change = pending("replace", i, {"title": f"{i}/{n}", "rank": n}, mid=f"{n}{i}")
                else:
                    change = pending("merge", i, {"rank": n, "done": n % 2 == 0}, mid=f"{n}{i}")
                batch.append(change)
            if len(batch) >= 500:
                await store.apply_push("ns", "c", batch)
                batch = []
        batch += [pending("delete", "r3", mid="d3"), pending("insert", "n1", {"title": "new"})]
        await store.apply_push("ns", "c", batch)
        total = await store.namespace_seq("ns")
        views = {cursor: await _pulled(store, {}, 0, cursor) for cursor in (0, 13, 4321, 9990)}
        settings = RetentionSettings(change_log_horizon=100, tombstone_ttl=10**6)
        start = time.time()
        first = await run_retention(store, settings, now=start)
        assert first.removed == 0  # nothing is 100 s old yet
        recent = [pending("merge", i, {"title": "recent"}, mid=f"recent{i}") for i in ids[:5]]
        await store.apply_push("ns", "c", recent)
        report = await run_retention(store, settings, now=start + 150)
        assert report.removed > 0 and report.rewritten > 0
        rows = await store.changes_since("ns", {"todos": 0, "notes": 0}, 100_000)
        # the latest change of each record up to the horizon (r3's delete too) + the recent
        assert len(rows) == len(ids) + 1 + len(recent)
        server = await self.records(store)
        for cursor, view in views.items():
            assert await _pulled(store, view, cursor, None) == server, f"from cursor {cursor}"
        assert await _pulled(store, {}, 0, None) == server
        assert await store.namespace_seq("ns") == total + len(recent)
        assert (await run_retention(store, settings, now=start + 150)).removed == 0

    async def test_deletes_are_kept_for_the_tombstone_ttl_then_expire_older_cursors(
        self, store: ServerStore
    ) -> None:
        await store.apply_push(
            "ns",
            "c",
            [
                pending("insert", "a", {"title": "a"}),
                pending("insert", "b", {"title": "b"}),
                pending("insert", "n", {"body": "x"}, resource="notes"),
            ],
        )
        await store.apply_push("ns", "c", [pending("delete", "a")])  # seq 4
        settings = RetentionSettings(change_log_horizon=0, tombstone_ttl=100)
        start = time.time()
        await run_retention(store, settings, now=start)
        # inside the ttl: a client that pulls from before the delete sees it
        assert [(c.op, c.id) for c in await store.changes_since("ns", {"todos": 3}, 10)] == [
            ("delete", "a")
        ]
        assert [c.id for c in await store.changes_since("ns", {"todos": 0}, 10)] == ["b", "a"]
        assert await store.compaction_floors("ns", ["todos", "notes"]) == {"todos": 0, "notes": 0}
        report = await run_retention(store, settings, now=start + 101)
        assert report.dropped == 1
        # the delete is gone; where it was, the resource's floor: a pull below it reads it
        assert await store.changes_since("ns", {"todos": 0}, 10) == [
            Change(2, "todos", "b", "insert", {"id": "b", "title": "b"}),
            Change(4, "todos", EXPIRE_ID, "expire", None),
        ]
        assert await store.changes_since("ns", {"todos": 4}, 10) == []
        assert await store.compaction_floors("ns", ["todos", "notes"]) == {"todos": 4, "notes": 0}
        assert await store.compaction_floors("other", ["todos"]) == {"todos": 0}
        assert await store.latest_seq("ns", ["todos"]) == {"todos": 4}  # a clone's cursor
        # a record re-created after its delete keeps its history; its old delete goes by
        # compaction, never as a tombstone (the floor does not move)
        await store.apply_push(
            "ns", "c", [pending("delete", "b"), pending("insert", "b", {}, mid="again")]
        )
        await run_retention(store, settings, now=start + 300)
        assert await store.compaction_floors("ns", ["todos"]) == {"todos": 4}
        assert [(c.op, c.id) for c in await store.changes_since("ns", {"todos": 4}, 10)] == [
            ("insert", "b")
        ]
        # a later drop moves the floor: still one expire row per resource
        await store.apply_push(
            "ns",
            "c",
            [pending("delete", "b", mid="gone"), pending("delete", "n", resource="notes")],
        )
        await run_retention(store, settings, now=start + 500)  # marks where they stand
        await run_retention(store, settings, now=start + 601)
        assert await store.compaction_floors("ns", ["todos", "notes"]) == {"todos": 7, "notes": 8}
        rows = await store.changes_since("ns", {"todos": 0, "notes": 0}, 10)
        assert [(c.seq, c.resource, c.op) for c in rows] == [
            (7, "todos", "expire"),
            (8, "notes", "expire"),
        ]

    async def test_retention_while_clients_write_and_pull_keeps_every_reader_correct(
        self, store: ServerStore
    ) -> None:
        ids = [f"r{i}" for i in range(5)]
        await store.apply_push("ns", "w", [pending("insert", i, {"title": i}) for i in ids])
        settings = RetentionSettings(change_log_horizon=0, tombstone_ttl=10**6)
        written = anyio.Event()
        runs = 0
        view: dict[str, dict[str, Any]] = {}
        cursor = 0

        async def writer() -> None:
            for n in range(80):
                merge = pending("merge", ids[n % 5], {"rank": n}, mid=f"m{n}")
                await store.apply_push("ns", "w", [merge])
                if n % 20 == 10:  # a delete and a re-creation now and then
                    again = pending("insert", ids[0], {"title": f"again {n}"}, mid=f"i{n}")
                    await store.apply_push("ns", "w", [pending("delete", ids[0], mid=f"d{n}")])
                    await store.apply_push("ns", "w", [again])
                await anyio.lowlevel.checkpoint()
            written.set()

        async def compactor() -> None:
            nonlocal runs
            while not written.is_set():
                await run_retention(store, settings, batch_size=7)
                runs += 1
                await anyio.lowlevel.checkpoint()

        async def reader() -> None:
            nonlocal cursor
            while not written.is_set():
                cursor = await _pull_page(store, view, cursor, 9)
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            tg.start_soon(compactor)
            tg.start_soon(reader)
        assert runs > 0
        view = await _pulled(store, view, cursor, None)
        assert view == await self.records(store)
        await run_retention(store, settings)
        rows = await store.changes_since("ns", {"todos": 0}, 10_000)
        assert len(rows) == len(ids)  # one change per record once it has all passed

    # -- retention, seen by clients ----------------------------------------------------------

    async def test_a_client_that_pulls_after_compaction_converges(
        self, store: ServerStore, tmp_path: Path
    ) -> None:
        async with _served(store, tmp_path) as served:
            async with served.client("a") as a, served.client("b") as b:
                await b.table("todos").insert({"id": "t1", "title": "one"})
                await b.table("todos").insert({"id": "t2", "title": "two"})
                await b.sync.push()
                await a.sync.pull()
                for n in range(30):
                    await b.table("todos").merge({"id": "t1", "rank": n})
                    await b.table("todos").merge({"id": "t2", "title": f"two/{n}"})
                    await b.sync.push()
                await b.table("todos").replace({"id": "t3", "title": "three"})
                await b.table("todos").delete("t2")
                await b.sync.push()
                settings = RetentionSettings(change_log_horizon=0, tombstone_ttl=3600)
                assert (await run_retention(store, settings)).removed > 0
                clones = len(served.statuses("clone"))
                await a.sync.pull()
                server = await self.records(store, "datafn")
                assert await _local(a) == server and set(server) == {"t1", "t3"}
                assert len(served.statuses("clone")) == clones  # pulled, never cloned again
            async with served.client("c") as c:
                await c.sync.pull()
                assert await _local(c) == await self.records(store, "datafn")

    async def test_a_client_offline_past_the_tombstone_ttl_reclones_and_keeps_its_writes(
        self, store: ServerStore, tmp_path: Path
    ) -> None:
        async with (
            _served(store, tmp_path) as served,
            served.client("a") as a,
            served.client("b") as b,
        ):
            for i in range(5):
                await b.table("todos").insert({"id": f"t{i}", "title": str(i)})
            await b.table("notes").insert({"id": "n1", "body": "kept"})
            await b.sync.push()
            await a.sync.pull()
            # a is offline: it writes locally while b deletes and updates
            await a.table("todos").insert({"id": "a-offline", "title": "written offline"})
            await a.table("todos").merge({"id": "t2", "title": "a's title"})
            await b.table("todos").delete("t1")
            await b.table("todos").merge({"id": "t3", "title": "b's title"})
            await b.table("todos").insert({"id": "t9", "title": "nine"})
            await b.sync.push()
            settings = RetentionSettings(change_log_horizon=0, tombstone_ttl=0)
            assert (await run_retention(store, settings)).dropped == 1
            pulls, clones = len(served.statuses("pull")), len(served.statuses("clone"))
            await a.sync.sync_all()  # back online
            assert served.statuses("pull")[pulls : pulls + 2] == [410, 200]  # expired, pulled
            assert served.statuses("clone")[clones:] == [200]  # todos cloned again, not notes
            assert await a.sync.pending() == []
            server = await self.records(store, "datafn")
            assert await _local(a) == server
            assert "t1" not in server and server["a-offline"]["title"] == "written offline"
            assert server["t2"]["title"] == "a's title" and server["t3"]["title"] == "b's title"
            assert await _local(a, "notes") == await self.records(store, "datafn", "notes")
            await b.sync.pull()
            assert await _local(b) == server

    async def test_a_deleted_record_stays_deleted_for_a_client_inside_the_tombstone_ttl(
        self, store: ServerStore, tmp_path: Path
    ) -> None:
        async with (
            _served(store, tmp_path) as served,
            served.client("a") as a,
            served.client("b") as b,
        ):
            await b.table("todos").insert({"id": "t1", "title": "doomed"})
            await b.table("todos").insert({"id": "t2", "title": "kept"})
            await b.sync.push()
            await a.sync.pull()
            assert set(await _local(a)) == {"t1", "t2"}
            await b.table("todos").merge({"id": "t1", "rank": 1})
            await b.table("todos").delete("t1")
            await b.sync.push()
            settings = RetentionSettings(change_log_horizon=0, tombstone_ttl=3600)
            report = await run_retention(store, settings)
            assert report.removed > 0 and report.dropped == 0
            await a.sync.pull()
            assert set(await _local(a)) == {"t2"} == set(await self.records(store, "datafn"))
            assert 410 not in served.statuses("pull")


async def _pulled(
    store: ServerStore, view: Mapping[str, dict[str, Any]], cursor: int, until: int | None
) -> dict[str, dict[str, Any]]:
    """The records of ``todos`` a client holding ``view`` at ``cursor`` has after pulling (up
    to seq ``until``), applying each page as a client does."""
    state = {k: dict(v) for k, v in view.items()}
    while True:
        moved = await _pull_page(store, state, cursor, 97, until)
        if moved == cursor:
            return state
        cursor = moved


async def _pull_page(
    store: ServerStore,
    state: dict[str, dict[str, Any]],
    cursor: int,
    limit: int,
    until: int | None = None,
) -> int:
    """Pull one page of ``todos`` after ``cursor`` into ``state`` as a client applies it (up
    to seq ``until``); the new cursor."""
    changes = await store.changes_since("ns", {"todos": cursor}, limit)
    if until is not None:
        changes = [c for c in changes if c.seq <= until]
    if not changes:
        return cursor
    assert all(c.op != "expire" for c in changes), "a pull from above the floor read it"
    records, merged, deleted = fold_changes(changes)
    for record in records.get("todos", []):
        state[record["id"]] = record
    for delta in merged.get("todos", []):
        state[delta["id"]] = {**state.get(delta["id"], {}), **delta}
    for record_id in deleted.get("todos", []):
        state.pop(record_id, None)
    return changes[-1].seq


async def _local(client: Any, resource: str = "todos") -> dict[str, Any]:
    return {r["id"]: r for r in await client.table(resource).query()}


class _Served:
    """The server application over a store, and clients wired to it in-process."""

    def __init__(self, app: Any, tmp_path: Path) -> None:
        import httpx

        self.app = app
        self.tmp_path = tmp_path
        self.answers: list[tuple[str, int]] = []
        asgi = httpx.ASGITransport(app=app)
        answers = self.answers

        class Recording(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                response = await asgi.handle_async_request(request)
                answers.append((request.url.path.rsplit("/", 1)[-1], response.status_code))
                return response

        self.transport = Recording()

    def statuses(self, endpoint: str) -> list[int]:
        """The HTTP statuses of the answers to ``endpoint``, in order."""
        return [status for name, status in self.answers if name == endpoint]

    def client(self, name: str) -> Any:
        from datafn.builtins.client_http import HttpTransport
        from datafn.client import Client

        return Client(
            store="memory://",
            client_id=name,
            schema=SCHEMA,
            transport=HttpTransport("http://datafn.test/datafn", transport=self.transport),
            use_env=False,
            sync={"reconcile_on_start": False},
        )


@contextlib.asynccontextmanager
async def _served(store: ServerStore, tmp_path: Path) -> AsyncIterator[_Served]:
    from datafn.runtime import Runtime
    from datafn.server import create_app

    pyproject = tmp_path / "server-pyproject.toml"
    pyproject.write_text('[project]\nname = "t"\n\n[tool.datafn]\n', encoding="utf-8")
    runtime = Runtime.boot(use_env=False, pyproject=pyproject)
    app = create_app(runtime, schema=SCHEMA, store=store)
    async with app.router.lifespan_context(app):
        yield _Served(app, tmp_path)
