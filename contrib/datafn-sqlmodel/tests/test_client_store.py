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
