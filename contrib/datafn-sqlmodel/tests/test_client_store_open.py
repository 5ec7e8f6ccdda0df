"""Opening the SQLite client store: stdlib DDL with the layout SQLAlchemy gave earlier files, no
write on an up-to-date file, and store URLs read as SQLAlchemy reads them."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

from datafn.errors import StoreError
from datafn.schema import Schema, load_schema
from datafn.testing.client_store import CONFORMANCE_SCHEMA, _write
from datafn_sqlmodel.client import CHANGELOG, META, SYNC_STATE, SqliteClientStore, _connect_args

_TYPES = {"string": sa.Text, "number": sa.Numeric, "boolean": sa.Integer}


def create_with_sqlalchemy(path: Path, schema: Schema, *, base_seq: bool = True) -> None:
    """The tables as the earlier, SQLAlchemy-based store created them (``base_seq``: with the
    changelog column added since, as that store would have added it)."""
    metadata = sa.MetaData()
    for spec in schema.resources:
        if spec.is_remote_only:
            continue
        sa.Table(
            spec.name,
            metadata,
            sa.Column("id", sa.Text, primary_key=True),
            *(sa.Column(f.name, _TYPES.get(f.type, sa.Text)) for f in spec.fields),
            sa.Column("_datafn_record", sa.Text, nullable=False),
            sqlite_with_rowid=False,
        )
    sa.Table(
        CHANGELOG,
        metadata,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("resource", sa.Text, nullable=False),
        sa.Column("operation", sa.Text, nullable=False),
        sa.Column("record_id", sa.Text, nullable=False),
        sa.Column("record", sa.Text),
        sa.Column("mutation_id", sa.Text, nullable=False, unique=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("guard", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("state", sa.Text, nullable=False, server_default="queued"),
        sa.Column("base", sa.Text),
        sa.Column("base_known", sa.Integer, nullable=False, server_default="0"),
        *([sa.Column("base_seq", sa.Integer)] if base_seq else []),
        sa.Index("ix_datafn_changelog_record", "resource", "record_id"),
        sqlite_autoincrement=True,
    )
    sa.Table(
        SYNC_STATE,
        metadata,
        sa.Column("resource", sa.Text, primary_key=True),
        sa.Column("cursor", sa.Integer, nullable=False),
        sa.Column("hydration", sa.Text, nullable=False),
        sa.Column("clone_after_id", sa.Text),
        sa.Column("clone_cursor", sa.Integer),
    )
    sa.Table(
        META,
        metadata,
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    engine = sa.create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    engine.dispose()


def layout(path: Path) -> dict[str, Any]:
    """Every table's columns (name, type, not null, default, primary key), indexes and
    whether it has a rowid."""
    with sqlite3.connect(path) as db:
        tables = [
            (name, sql)
            for name, sql in db.execute("SELECT name, sql FROM sqlite_master WHERE type='table'")
            if not name.startswith("sqlite_")
        ]
        out: dict[str, Any] = {}
        for name, sql in tables:
            quoted = '"' + name + '"'
            columns = [row[1:] for row in db.execute(f"PRAGMA table_info({quoted})")]
            indexes = sorted(
                (row[1], row[2], row[3]) for row in db.execute(f"PRAGMA index_list({quoted})")
            )
            out[name] = (columns, indexes, "WITHOUT ROWID" in sql)
    db.close()
    return out


@pytest.fixture
def schema() -> Schema:
    return load_schema(CONFORMANCE_SCHEMA)


async def test_a_new_file_has_the_layout_sqlalchemy_gave_earlier_files(
    tmp_path: Path, schema: Schema
) -> None:
    create_with_sqlalchemy(tmp_path / "earlier.db", schema)
    store = SqliteClientStore(f"sqlite:///{tmp_path}/new.db", schema, None)
    await store.open()
    await store.aclose()
    assert layout(tmp_path / "new.db") == layout(tmp_path / "earlier.db")


async def test_a_file_of_the_earlier_store_opens_as_it_is_and_keeps_its_data(
    tmp_path: Path, schema: Schema
) -> None:
    path = tmp_path / "earlier.db"
    create_with_sqlalchemy(path, schema, base_seq=False)
    create_with_sqlalchemy(tmp_path / "current.db", schema)
    store = SqliteClientStore(f"sqlite:///{path}", schema, None)
    await store.open()
    try:
        await store.write(_write("todos", "insert", "t1", {"title": "a", "done": False}))
        assert await store.get("todos", "t1") == {"id": "t1", "title": "a", "done": False}
        assert [e.record_id for e in await store.changelog()] == ["t1"]
    finally:
        await store.aclose()
    # the one column added since (base_seq, nullable) is added; nothing else changes
    assert layout(path) == layout(tmp_path / "current.db")


async def test_opening_an_up_to_date_file_takes_no_write_lock(
    tmp_path: Path, schema: Schema
) -> None:
    url = f"sqlite:///{tmp_path}/app.db"
    store = SqliteClientStore(url, schema, None)
    await store.open()
    await store.set_meta("client_id", "client:1")
    await store.aclose()
    writer = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process is writing
    try:
        store = SqliteClientStore(url, schema, None)
        with anyio.fail_after(5):  # a write would wait for the lock (busy_timeout: 10 s)
            await store.open()
            assert await store.get_meta("client_id") == "client:1"
        await store.aclose()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///app.db",
        "sqlite:///sub/dir/app.db",
        "sqlite:////srv/app/app.db",
        "sqlite+pysqlite:///app.db",
        "SQLITE:///app.db",
        "sqlite:///my%20app.db",
        "sqlite:///app.db?timeout=5",
        "sqlite:///file:app.db?mode=ro&uri=true",
    ],
)
def test_store_urls_are_read_as_sqlalchemy_reads_them(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args, options = SQLiteDialect_pysqlite().create_connect_args(sa.make_url(url))
    options.pop("check_same_thread", None)  # the store always shares its one connection
    assert _connect_args(url) == (args[0], options)


def test_a_url_with_a_host_is_refused() -> None:
    with pytest.raises(StoreError, match="not a SQLite store URL"):
        _connect_args("sqlite://server/app.db")


async def test_a_relative_file_is_relative_to_the_working_folder_and_options_apply(
    tmp_path: Path, schema: Schema, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite:///data/app.db", "sqlite:///data/app.db?timeout=5"):
        store = SqliteClientStore(url, schema, None)
        await store.open()
        await store.set_meta("opened", url)
        await store.aclose()
    with sqlite3.connect(f"file:{tmp_path}/data/app.db?mode=rw", uri=True) as db:
        assert db.execute("SELECT value FROM _datafn_meta").fetchall() == [
            ("sqlite:///data/app.db?timeout=5",)
        ]
    db.close()


async def test_an_in_memory_store_works(schema: Schema) -> None:
    store = SqliteClientStore("sqlite://", schema, None)
    await store.open()
    try:
        await store.write(_write("todos", "insert", "t1", {"title": "a"}))
        assert await store.count("todos") == 1
    finally:
        await store.aclose()
