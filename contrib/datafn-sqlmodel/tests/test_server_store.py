"""The SQLite and PostgreSQL server stores run the server-store conformance suite."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from datafn.schema import Schema, load_schema
from datafn.testing.server_store import SCHEMA, MakeStore, ServerStoreSuite, pending
from datafn_sqlmodel.server_store import NOW_ROWS, SqlServerStore, records_table_name


class TestSqliteServerStore(ServerStoreSuite):
    persistent = True

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> MakeStore:
        url = f"sqlite:///{tmp_path / 'server.db'}"

        def make(schema: Schema) -> SqlServerStore:
            return SqlServerStore(url, schema)

        return make


class TestSqliteMemoryServerStore(ServerStoreSuite):
    persistent = False

    @pytest.fixture
    def make_store(self) -> MakeStore:
        def make(schema: Schema) -> SqlServerStore:
            return SqlServerStore("sqlite://", schema)

        return make


@pytest.mark.postgres
class TestPostgresqlServerStore(ServerStoreSuite):
    persistent = True

    @pytest.fixture
    def make_store(self, postgres_url: str) -> MakeStore:
        def make(schema: Schema) -> SqlServerStore:
            return SqlServerStore(postgres_url, schema)

        return make


def test_long_resource_names_get_short_unique_tables() -> None:
    a, b = "r" * 63, "r" * 62 + "s"
    assert len(records_table_name(a)) <= 63 and records_table_name(a) != records_table_name(b)
    assert records_table_name("todos") == "datafn_records_todos"


@pytest.fixture
async def sqlite_file_store(tmp_path: Path) -> AsyncIterator[SqlServerStore]:
    store = SqlServerStore(f"sqlite:///{tmp_path / 'server.db'}", load_schema(SCHEMA))
    await store.open()
    await store.apply_push("ns", "c1", [pending("insert", "todos:1", {"title": "a"})])
    try:
        yield store
    finally:
        await store.aclose()


def hops_of(store: SqlServerStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The reads ``store`` hands to a worker thread from now on (by function name)."""
    hops: list[str] = []
    run = store._run

    async def counted(func: Any, *args: Any) -> Any:
        hops.append(getattr(args[0], "__name__", "?") if func == store._in_read else func.__name__)
        return await run(func, *args)

    monkeypatch.setattr(store, "_run", counted)
    return hops


async def test_short_reads_on_an_sqlite_file_stay_on_the_calling_thread(
    sqlite_file_store: SqlServerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops = hops_of(sqlite_file_store, monkeypatch)
    changes = await sqlite_file_store.changes_since("ns", {"todos": 0}, 10)
    assert [(c.seq, c.id, c.data) for c in changes] == [
        (1, "todos:1", {"id": "todos:1", "title": "a"})
    ]
    assert await sqlite_file_store.namespace_seq("ns") == 1
    assert await sqlite_file_store.latest_seq("ns", ["todos", "notes"]) == {"todos": 1, "notes": 0}
    assert hops == []


async def test_a_long_pull_is_read_in_a_worker_thread(
    sqlite_file_store: SqlServerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sqlite_file_store.apply_push(
        "ns", "c1", [pending("insert", f"todos:m{i:03}", {"title": "m"}) for i in range(NOW_ROWS)]
    )
    hops = hops_of(sqlite_file_store, monkeypatch)
    few = await sqlite_file_store.changes_since("ns", {"todos": NOW_ROWS - 10}, 1000)
    assert [c.seq for c in few] == list(range(NOW_ROWS - 9, NOW_ROWS + 2)) and hops == []
    # more than NOW_ROWS changes: the first NOW_ROWS on this thread tell, then the whole
    # answer comes from a worker thread
    many = await sqlite_file_store.changes_since("ns", {"todos": 0}, 1000)
    assert [c.seq for c in many] == list(range(1, NOW_ROWS + 2))
    assert hops == ["_changes_since"]
    # a limit of at most NOW_ROWS is read on this thread whatever there is
    assert len(await sqlite_file_store.changes_since("ns", {"todos": 0}, NOW_ROWS)) == NOW_ROWS
    assert hops == ["_changes_since"]


async def test_a_short_read_that_finds_the_database_locked_waits_in_a_worker_thread(
    sqlite_file_store: SqlServerStore,
) -> None:
    # On the calling thread a locked database fails at once (busy timeout 0) instead of
    # blocking the event loop; the read is then done again in a worker thread, which waits.
    caller = threading.get_ident()
    threads: list[bool] = []

    def read(conn: Any) -> int:
        threads.append(threading.get_ident() == caller)
        if threads[-1]:
            locked = sqlite3.OperationalError("database is locked")
            locked.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
            raise sa.exc.OperationalError("SELECT 1", None, locked)
        return int(conn.exec_driver_sql("SELECT seq FROM datafn_counters").scalar_one())

    assert await sqlite_file_store._read_now(read) == 1
    assert threads == [True, False]


async def test_other_errors_of_a_short_read_are_raised(sqlite_file_store: SqlServerStore) -> None:
    def read(conn: Any) -> None:
        conn.exec_driver_sql("SELECT * FROM no_such_table")

    with pytest.raises(sa.exc.OperationalError, match="no such table"):
        await sqlite_file_store._read_now(read)


async def test_the_reader_of_short_reads_cannot_write(
    sqlite_file_store: SqlServerStore,
) -> None:
    def write(conn: Any) -> None:
        conn.exec_driver_sql("DELETE FROM datafn_counters")

    with pytest.raises(sa.exc.OperationalError, match="readonly"):
        await sqlite_file_store._read_now(write)
    assert await sqlite_file_store.namespace_seq("ns") == 1


async def test_a_short_read_hops_while_another_thread_has_the_reader(
    sqlite_file_store: SqlServerStore,
) -> None:
    caller = threading.get_ident()

    def read(conn: Any) -> bool:
        return threading.get_ident() == caller

    assert await sqlite_file_store._read_now(read) is True
    with sqlite_file_store._now_lock:  # as when a store is shared by two event loops
        assert await sqlite_file_store._read_now(read) is False


@pytest.mark.postgres
async def test_the_idempotency_lookup_probes_the_key_at_any_size(postgres_url: str) -> None:
    """30 000 idempotency records of one client, statistics fresh or not: the lookup of a
    batch reads the rows of its own ids, never every row of the client."""
    from datafn_sqlmodel.server_store import REPLAYS_SQL_POSTGRESQL

    store = SqlServerStore(postgres_url, load_schema(SCHEMA))
    await store.open()
    try:
        await store.apply_push("ns", "c1", [pending("insert", "todos:1", {"title": "a"})])
        engine = sa.create_engine(postgres_url)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(
                    "INSERT INTO datafn_idempotency (namespace, client_id, mutation_id, outcome)"
                    " SELECT 'ns', 'c1', 'm' || g, '{\"ok\": true}'"
                    " FROM generate_series(1, 30000) AS g"
                )
                for analyze in (False, True):
                    if analyze:
                        conn.exec_driver_sql("ANALYZE datafn_idempotency")
                    plan = conn.exec_driver_sql(
                        "EXPLAIN (ANALYZE, FORMAT JSON) " + REPLAYS_SQL_POSTGRESQL,
                        {"ns": "ns", "client": "c1", "mids": ["m5", "m77", "nope"]},
                    ).scalar_one()
                    nodes = list(_plan_nodes(plan[0]["Plan"]))
                    removed = sum(n.get("Rows Removed by Filter", 0) for n in nodes)
                    read = max(n.get("Actual Rows", 0) for n in nodes)
                    assert removed == 0 and read <= 3, plan
        finally:
            engine.dispose()
    finally:
        await store.aclose()


def _plan_nodes(node: dict[str, Any]) -> Any:
    yield node
    for child in node.get("Plans", ()):
        yield from _plan_nodes(child)


@pytest.mark.postgres
async def test_clone_pages_and_cursors_walk_an_index_when_the_statistics_are_stale(
    postgres_url: str,
) -> None:
    """20 000 records and changes written after the last ANALYZE (the planner believes the
    tables empty): a clone page reads its own rows in key order, the latest seq of a resource
    one index entry, never every row followed by a sort."""
    store = SqlServerStore(postgres_url, load_schema(SCHEMA))
    await store.open()
    try:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.exec_driver_sql(
                "INSERT INTO datafn_records_todos (namespace, id, data, seq)"
                " SELECT 'ns', 'todos:' || lpad(g::text, 6, '0'), '{}', g"
                " FROM generate_series(1, 20000) AS g"
            )
            conn.exec_driver_sql(
                "INSERT INTO datafn_changes (namespace, seq, resource, record_id, op, data)"
                " SELECT 'ns', g, 'todos', 'todos:' || lpad(g::text, 6, '0'), 'insert', '{}'"
                " FROM generate_series(1, 20000) AS g"
            )
        statements = [
            (store._page_sql("todos", after=True), {"ns": "ns", "after": "todos:010000"}, 100),
            (store._page_sql("todos", after=False), {"ns": "ns"}, 100),
            (store._latest_sql(), {"ns": "ns", "res": "todos"}, 1),
        ]
        with store.engine.connect() as conn:  # the store's sessions, with their settings
            for sql, params, most in statements:
                plan = conn.exec_driver_sql(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + sql, {**params, "lim": 100}
                ).scalar_one()
                nodes = list(_plan_nodes(plan[0]["Plan"]))
                assert not [n for n in nodes if n["Node Type"] in ("Sort", "Bitmap Heap Scan")]
                assert max(n.get("Actual Rows", 0) for n in nodes) <= most, plan
        assert await store.latest_seq("ns", ["todos"]) == {"todos": 20000}
        seq, page = await store.clone_page_at("ns", "todos", "todos:019998", 100)
        assert (seq, page.ids) == (20000, ["todos:019999", "todos:020000"])
    finally:
        await store.aclose()


async def _rewrite_stored_and_new_records_in_one_batch(store: SqlServerStore) -> None:
    """A push writes each record's final state: inserted when it was not stored, updated when
    it was, deleted only when it was (whatever happened to it earlier in the batch)."""
    await store.apply_push(
        "rw",
        "c1",
        [pending("insert", key, {"title": key}) for key in ("s1", "s2", "s3", "s4")],
    )
    outcome = await store.apply_push(
        "rw",
        "c1",
        [
            pending("delete", "s1", mid="m1"),
            pending("insert", "s1", {"title": "again"}, mid="m2"),
            pending("replace", "s2", {"title": "replaced"}, mid="m3"),
            pending("merge", "s3", {"done": True}, mid="m4"),
            pending("delete", "s4", mid="m5"),
            pending("insert", "n1", {"title": "new"}, mid="m6"),
            pending("delete", "n1", mid="m7"),
            pending("insert", "n2", {"title": "gone"}, mid="m8"),
            pending("delete", "n2", mid="m9"),
            pending("insert", "n2", {"title": "back"}, mid="m10"),
        ],
    )
    assert outcome.results == [None] * 10
    page = await store.clone_page("rw", "todos", None, 100)
    assert list(page) == [
        {"id": "n2", "title": "back"},
        {"id": "s1", "title": "again"},
        {"id": "s2", "title": "replaced"},
        {"id": "s3", "title": "s3", "done": True},
    ]
    assert await store.counts("rw", ["todos"]) == {"todos": 4}
    replay = await store.apply_push("rw", "c1", [pending("delete", "s2", mid="m3")])
    assert replay.results == [None] and replay.cursor == outcome.cursor  # a replay


async def test_a_batch_rewrites_stored_and_new_records_on_sqlite(
    sqlite_file_store: SqlServerStore,
) -> None:
    await _rewrite_stored_and_new_records_in_one_batch(sqlite_file_store)


@pytest.mark.postgres
async def test_a_batch_rewrites_stored_and_new_records_on_postgresql(postgres_url: str) -> None:
    store = SqlServerStore(postgres_url, load_schema(SCHEMA))
    await store.open()
    try:
        await _rewrite_stored_and_new_records_in_one_batch(store)
    finally:
        await store.aclose()
