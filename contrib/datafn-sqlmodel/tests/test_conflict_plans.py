"""Conflict detection on PostgreSQL reads only the rows it needs, whatever the statistics say:
the records of a push with their seqs, and a record's change-log rows after a base."""

from __future__ import annotations

from typing import Any

import pytest

from datafn.schema import load_schema
from datafn.server.store import PendingMutation
from datafn.testing.server_store import SCHEMA
from datafn_sqlmodel.server_store import HISTORY_SQL_POSTGRESQL, SqlServerStore


def _plan_nodes(node: dict[str, Any]) -> Any:
    yield node
    for child in node.get("Plans", ()):
        yield from _plan_nodes(child)


@pytest.mark.postgres
async def test_conflict_reads_walk_indexes_at_any_size(postgres_url: str) -> None:
    store = SqlServerStore(postgres_url, load_schema(SCHEMA))
    await store.open()
    try:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")  # the planner believes the tables empty
            conn.exec_driver_sql(
                "INSERT INTO datafn_records_todos (namespace, id, data, seq)"
                " SELECT 'ns', 'todos:' || lpad(g::text, 6, '0'), '{}', g * 4"
                " FROM generate_series(1, 20000) AS g"
            )
            # four changes per record, by two clients
            conn.exec_driver_sql(
                "INSERT INTO datafn_changes (namespace, seq, resource, record_id, op, data,"
                " client_id) SELECT 'ns', g, 'todos',"
                " 'todos:' || lpad(((g + 3) / 4)::text, 6, '0'), 'merge', '{}',"
                " CASE WHEN mod(g, 2) = 0 THEN 'a' ELSE 'b' END"
                " FROM generate_series(1, 80000) AS g"
            )
        ids = ["todos:000007", "todos:012345", "todos:019999"]
        statements = [
            (store._load_sql_postgresql("todos", with_seq=True), {"ns": "ns", "ids": ids}, 3),
            (
                HISTORY_SQL_POSTGRESQL,
                {
                    "ns": "ns",
                    "res": ["todos"] * 3,
                    "ids": ids,
                    "bases": [0, 12345 * 4 - 2, 80000],
                },
                6,  # the rows answered: 4 + 2 + 0
            ),
        ]
        with store.engine.connect() as conn:  # the store's sessions, with their settings
            for analyze in (False, True):
                if analyze:
                    conn.exec_driver_sql("ANALYZE")
                for sql, params, most in statements:
                    plan = conn.exec_driver_sql(
                        "EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params
                    ).scalar_one()
                    nodes = list(_plan_nodes(plan[0]["Plan"]))
                    assert not [n for n in nodes if n["Node Type"] in ("Seq Scan", "Sort")], plan
                    assert max(n.get("Actual Rows", 0) for n in nodes) <= most, plan
            rows = conn.exec_driver_sql(HISTORY_SQL_POSTGRESQL, statements[1][1]).fetchall()
        # record 7: its four rows, newest first; 12345: the two above the base; 19999: none
        assert [(r[2], r[0]) for r in rows] == [
            *(("todos:000007", s) for s in (28, 27, 26, 25)),
            ("todos:012345", 49380),
            ("todos:012345", 49379),
        ]
    finally:
        await store.aclose()


async def test_an_older_change_log_gains_the_provenance_columns(tmp_path: Any) -> None:
    """A database written before provenance: opening it adds ``client_id`` and ``conflict``
    (nullable), keeps every row, and a row without a client counts as another client's."""
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE datafn_changes (namespace TEXT NOT NULL, seq BIGINT NOT NULL,
            resource TEXT NOT NULL, record_id TEXT NOT NULL, op TEXT NOT NULL, data TEXT,
            PRIMARY KEY (namespace, seq));
        CREATE TABLE datafn_records_todos (namespace TEXT NOT NULL, id TEXT NOT NULL,
            data TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (namespace, id));
        CREATE TABLE datafn_counters (namespace TEXT NOT NULL PRIMARY KEY, seq BIGINT NOT NULL);
        INSERT INTO datafn_changes VALUES ('ns', 1, 'todos', 'a', 'insert',
            '{"id": "a", "title": "old"}');
        INSERT INTO datafn_records_todos VALUES ('ns', 'a', '{"id": "a", "title": "old"}', 1);
        INSERT INTO datafn_counters VALUES ('ns', 1);
        """
    )
    db.commit()
    db.close()
    store = SqlServerStore(f"sqlite:///{path}", load_schema(SCHEMA))
    await store.open()
    try:
        [old] = await store.changes_since("ns", {"todos": 0}, 10)
        assert (old.seq, old.data, old.client_id, old.conflict) == (
            1,
            {"id": "a", "title": "old"},
            None,
            None,
        )
        outcome = await store.apply_push(
            "ns",
            "c1",
            [PendingMutation("m1", "todos", "merge", "a", {"id": "a", "title": "new"}, base_seq=0)],
        )
        assert outcome.results == [None]
        conflict = outcome.conflicts[0]
        assert conflict["fields"] == ["title"] and conflict["seq"] == 1
        assert "clientId" not in conflict  # unknown: written before provenance
        [_, new] = await store.changes_since("ns", {"todos": 0}, 10)
        assert (new.client_id, new.conflict) == ("c1", conflict)
    finally:
        await store.aclose()
