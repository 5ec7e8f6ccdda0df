"""Several server processes starting at once on a fresh database: every one opens, the tables
are created once (PostgreSQL: an advisory lock around the migration; SQLite: BEGIN
IMMEDIATE), and so when they start together again on a grown schema."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from datafn.schema import load_schema
from datafn_sqlmodel.server_store import FORMAT_VERSION, SqlServerStore

PROCESSES = 4
TODOS = {"name": "todos", "fields": [{"name": "title", "type": "string"}]}
NOTES = {"name": "notes", "fields": [{"name": "body", "type": "string"}]}

#: One process: build the store, say so, wait for the word, then open (migrate) and close.
CHILD = """
import json, sys
import anyio
from datafn.schema import load_schema
from datafn_sqlmodel.server_store import SqlServerStore

store = SqlServerStore(sys.argv[1], load_schema(json.loads(sys.argv[2])))
print("ready", flush=True)
sys.stdin.readline()

async def main():
    await store.open()
    await store.aclose()

anyio.run(main)
print("opened", flush=True)
"""


def start_together(url: str, resources: list[dict[str, Any]]) -> None:
    """Start :data:`PROCESSES` processes, let them all import, then open the store at once."""
    schema = json.dumps({"resources": resources})
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, url, schema],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        for child in children:  # as close together as two cores allow
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outcomes = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    for child, (out, err) in zip(children, outcomes, strict=True):
        assert child.returncode == 0 and out == "opened\n", err


def expected_tables(url: str) -> set[str]:
    """The tables a store of both resources defines (whatever else this version adds)."""
    store = SqlServerStore(url, load_schema({"resources": [TODOS, NOTES]}))
    return set(store.tables.metadata.tables)


@pytest.mark.postgres
def test_postgresql_processes_migrate_a_fresh_database_at_once(postgres_url: str) -> None:
    import psycopg

    start_together(postgres_url, [TODOS])
    start_together(postgres_url, [TODOS, NOTES])  # a grown schema: one new table, once
    with psycopg.connect(postgres_url.replace("+psycopg", "")) as conn:
        tables = {
            name
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        indexes = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'datafn_changes_by_resource'"
        ).fetchone()
        meta = conn.execute("SELECT key, value FROM datafn_meta").fetchall()
    assert tables == expected_tables(postgres_url)
    assert indexes == (1,)
    assert ("format", str(FORMAT_VERSION)) in meta


def test_sqlite_processes_create_a_fresh_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    url = f"sqlite:///{path}"
    start_together(url, [TODOS])
    start_together(url, [TODOS, NOTES])
    with sqlite3.connect(path) as conn:
        tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        meta = conn.execute("SELECT key, value FROM datafn_meta").fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()
    assert tables == expected_tables(url)
    assert ("format", str(FORMAT_VERSION)) in meta
    assert mode == ("wal",)
