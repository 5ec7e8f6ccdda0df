"""The SQLite client store passes the client store conformance suite, and its data is SQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from datafn.schema import load_schema
from datafn.testing.client_store import CONFORMANCE_SCHEMA, ClientStoreConformance, _write
from datafn_sqlmodel.client import SqliteClientStore


class TestSqliteClientStore(ClientStoreConformance):
    durable = True

    @pytest.fixture
    def store_factory(self, tmp_path: Path):  # type: ignore[no-untyped-def]
        return lambda schema: SqliteClientStore(f"sqlite:///{tmp_path}/client.db", schema, None)


async def test_local_data_is_queryable_with_sql(tmp_path: Path) -> None:
    store = SqliteClientStore(f"sqlite:///{tmp_path}/app.db", load_schema(CONFORMANCE_SCHEMA), None)
    await store.open()
    await store.write(
        _write("todos", "insert", "t1", {"title": "a", "done": True, "tags": ["x"], "priority": 2})
    )
    await store.aclose()
    with sqlite3.connect(tmp_path / "app.db") as db:
        assert db.execute("SELECT id, title, done, priority, tags FROM todos").fetchall() == [
            ("t1", "a", 1, 2, '["x"]')
        ]
        assert db.execute("SELECT operation FROM _datafn_changelog").fetchall() == [("insert",)]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_new_schema_fields_become_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/app.db"
    store = SqliteClientStore(url, load_schema(CONFORMANCE_SCHEMA), None)
    await store.open()
    await store.aclose()
    schema = {**CONFORMANCE_SCHEMA}
    schema["resources"] = [
        {**r, "fields": [*r["fields"], {"name": "extra", "type": "string"}]}
        if r["name"] == "notes"
        else r
        for r in CONFORMANCE_SCHEMA["resources"]
    ]
    store = SqliteClientStore(url, load_schema(schema), None)
    await store.open()
    await store.write(_write("notes", "insert", "n1", {"body": "b", "extra": "e"}))
    await store.aclose()
    with sqlite3.connect(tmp_path / "app.db") as db:
        assert db.execute("SELECT extra FROM notes").fetchall() == [("e",)]


async def test_a_file_of_the_first_changelog_layout_opens_and_keeps_its_writes(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/app.db"
    schema = load_schema(CONFORMANCE_SCHEMA)
    store = SqliteClientStore(url, schema, None)
    await store.open()
    await store.write(_write("todos", "insert", "t1", {"title": "queued before the upgrade"}))
    await store.aclose()
    with sqlite3.connect(tmp_path / "app.db") as db:  # the layout before bases and dead letters
        for column in ("attempts", "last_error", "state", "base", "base_known"):
            db.execute(f"ALTER TABLE _datafn_changelog DROP COLUMN {column}")
    store = SqliteClientStore(url, schema, None)
    await store.open()
    try:
        (entry,) = await store.changelog()
        assert (entry.record_id, entry.state, entry.attempts) == ("t1", "queued", 0)
        # its base is not known: refusing it asks the caller for a re-clone of the resource
        assert await store.reject([entry.seq]) == {"todos"}
        assert await store.pending_count() == 0
    finally:
        await store.aclose()
