"""The client store on SQLite (plugin module of datafn-sqlmodel): ``store = "sqlite:///app.db"``.

Layout, so that the local data can be queried with plain SQL:

- one table per resource, named like the resource: ``id`` (primary key), one column per schema
  field (strings TEXT, numbers NUMERIC, booleans INTEGER 0/1, objects/arrays/json as JSON text)
  and ``_datafn_record``, the record as JSON (what the client reads, so values round-trip
  exactly);
- ``_datafn_changelog``: the unacknowledged local writes, ``seq`` in write order;
- ``_datafn_sync_state``: per resource cursor, hydration and clone position;
- ``_datafn_meta``: key/value (the generated client id).

The database runs in WAL mode with ``synchronous=NORMAL``: a committed transaction survives the
process being killed. Every method runs in one transaction (``BEGIN IMMEDIATE`` … ``COMMIT``)
on one connection, in a worker thread, one at a time, so the event loop keeps running while a
clone page is written. The store talks to the stdlib ``sqlite3`` driver directly: opening a
file creates the missing tables with plain DDL and runs no SQLAlchemy (a client opens in
milliseconds); the hot paths (local writes, clone pages) run prepared SQL with ``executemany``.
Store URLs are read as SQLAlchemy reads them (``sqlite:///relative.db``,
``sqlite:////absolute.db``, ``sqlite://`` in memory; options such as ``?timeout=5`` or
``?uri=true`` are handed to SQLAlchemy's SQLite dialect to interpret).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson

from datafn.client.store import (
    ChangelogEntry,
    ClientStore,
    LocalWrite,
    PullPage,
    Query,
    ResourceState,
    apply_operation,
    matches,
    replay,
    sort_records,
)
from datafn.errors import Conflict, StoreError
from datafn.plugin import hookimpl
from datafn.registry import Registry
from datafn.schema import ResourceSpec, Schema

__all__ = ["SqliteClientStore"]

T = TypeVar("T")

RECORD_COLUMN = "_datafn_record"
CHANGELOG = "_datafn_changelog"
SYNC_STATE = "_datafn_sync_state"
META = "_datafn_meta"

_SQL_TYPES = {
    "string": "TEXT",
    "number": "NUMERIC",
    "boolean": "INTEGER",
    "date": "TEXT",
    "object": "TEXT",
    "array": "TEXT",
    "json": "TEXT",
}
_SCALAR = frozenset({"string", "number", "boolean", "date"})
_CHUNK = 500  # ids per IN (...) list


def _q(name: str) -> str:
    """Quote an identifier (names are checked against IDENTIFIER_PATTERN by the schema)."""
    return '"' + name.replace('"', '""') + '"'


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class _Table:
    """Prepared SQL of one resource table."""

    def __init__(self, spec: ResourceSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.fields = [(f.name, f.type in _SCALAR) for f in spec.fields]
        columns = ["id", *(name for name, _ in self.fields), RECORD_COLUMN]
        marks = ", ".join("?" for _ in columns)
        self.upsert = (
            f"INSERT OR REPLACE INTO {_q(self.name)} ({', '.join(map(_q, columns))}) "
            f"VALUES ({marks})"
        )
        # Bulk path: the whole page as one JSON array parameter, unpacked by SQLite itself, so
        # one statement step writes every row (no per-row Python work or GIL hand-over while
        # the event loop parses the next page).
        extracted = ", ".join(
            ["json_extract(value, '$.id')"]
            + [f"json_extract(value, '$.{name}')" for name, _ in self.fields]
            + ["value"]
        )
        self.upsert_page = (
            f"INSERT OR REPLACE INTO {_q(self.name)} ({', '.join(map(_q, columns))}) "
            f"SELECT {extracted} FROM json_each(?)"
        )
        self.select_one = f"SELECT {RECORD_COLUMN} FROM {_q(self.name)} WHERE id = ?"
        self.delete_one = f"DELETE FROM {_q(self.name)} WHERE id = ?"

    def row(self, record: Mapping[str, Any]) -> tuple[Any, ...]:
        values: list[Any] = [record["id"]]
        for name, scalar in self.fields:
            value = record.get(name)
            values.append(value if scalar or value is None else _dumps(value))
        values.append(_dumps(record))
        return tuple(values)


class SqliteClientStore(ClientStore):
    """A client store in one SQLite file (``sqlite:///app.db``; ``sqlite://`` in memory)."""

    name = "sqlite"

    def __init__(self, url: str, schema: Schema, config: Any = None) -> None:
        self.url = url
        self.schema = schema
        self._tables = {r.name: _Table(r) for r in schema.resources if not r.is_remote_only}
        for table in self._tables.values():
            if any(name == RECORD_COLUMN for name, _ in table.fields):
                raise StoreError(f"{table.name}.{RECORD_COLUMN} is a reserved column name")
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(1)

    # -- plumbing ------------------------------------------------------------------------------

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._open_sync, limiter=self._limiter)

    def _open_sync(self) -> None:
        database, options = _connect_args(self.url)
        if database != ":memory:" and not options.get("uri"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        try:
            raw = sqlite3.connect(
                database, **{**options, "check_same_thread": False, "isolation_level": None}
            )
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite client store: cannot open {database}: {exc}") from exc
        try:
            for pragma in (
                "journal_mode=WAL",
                "synchronous=NORMAL",
                "temp_store=MEMORY",
                "cache_size=-16000",
                "busy_timeout=10000",
            ):
                raw.execute(f"PRAGMA {pragma}")
            self._db = raw
            self._create_tables()
        except BaseException:
            self._db = None
            raw.close()
            raise

    def _create_tables(self) -> None:
        """Create the missing tables and add the columns an older file lacks.

        An up-to-date file is only read (no write lock is taken); otherwise the changes are
        worked out again and made in one ``BEGIN IMMEDIATE`` transaction, so two processes
        opening the same new file do not both make them.
        """
        db = self._db
        assert db is not None
        if not self._schema_changes(db):
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in self._schema_changes(db):
                db.execute(statement)
            db.execute("COMMIT")
        except BaseException as exc:
            db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"SQLite client store: {exc}") from exc
            raise

    def _schema_changes(self, db: sqlite3.Connection) -> list[str]:
        """The DDL that brings the file up to date with the schema (empty when it is)."""
        existing = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        statements: list[str] = []
        for table in self._tables.values():
            if table.name not in existing:
                columns = [
                    "id TEXT NOT NULL",
                    *(f"{_q(f.name)} {_SQL_TYPES[f.type]}" for f in table.spec.fields),
                    f"{RECORD_COLUMN} TEXT NOT NULL",
                    "PRIMARY KEY (id)",
                ]
                # WITHOUT ROWID: rows live in the id b-tree, one insert per record
                statements.append(_create(table.name, columns, " WITHOUT ROWID"))
                continue
            have = {row[1] for row in db.execute(f"PRAGMA table_info({_q(table.name)})")}
            statements += [  # fields added to the schema since
                f"ALTER TABLE {_q(table.name)} ADD COLUMN {_q(f.name)} {_SQL_TYPES[f.type]}"
                for f in table.spec.fields
                if f.name not in have
            ]
        if CHANGELOG not in existing:
            columns = [f"{name} {kind}" for name, kind in _CHANGELOG_COLUMNS]
            statements.append(_create(CHANGELOG, [*columns, "UNIQUE (mutation_id)"]))
        else:
            have = {row[1] for row in db.execute(f"PRAGMA table_info({CHANGELOG})")}
            statements += [  # columns added since the file was created
                f"ALTER TABLE {CHANGELOG} ADD COLUMN {name} {kind}"
                for name, kind in _CHANGELOG_COLUMNS[_CHANGELOG_FIRST:]
                if name not in have
            ]
        if _CHANGELOG_INDEX not in existing:
            statements.append(
                f"CREATE INDEX IF NOT EXISTS {_CHANGELOG_INDEX} "
                f"ON {CHANGELOG} (resource, record_id)"
            )
        if SYNC_STATE not in existing:
            statements.append(
                _create(
                    SYNC_STATE,
                    [
                        "resource TEXT NOT NULL",
                        "cursor INTEGER NOT NULL",
                        "hydration TEXT NOT NULL",
                        "clone_after_id TEXT",
                        "clone_cursor INTEGER",
                        "PRIMARY KEY (resource)",
                    ],
                )
            )
        if META not in existing:
            statements.append(
                _create(META, ['"key" TEXT NOT NULL', "value TEXT NOT NULL", 'PRIMARY KEY ("key")'])
            )
        return statements

    async def aclose(self) -> None:
        if self._db is not None:
            await anyio.to_thread.run_sync(self._close_sync, limiter=self._limiter)

    def _close_sync(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    async def _run(self, function: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        return await anyio.to_thread.run_sync(
            self._transaction, function, write, limiter=self._limiter
        )

    def _transaction(self, function: Callable[[sqlite3.Connection], T], write: bool) -> T:
        db = self._db
        if db is None:
            raise StoreError("the SQLite client store is closed")
        with self._lock:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = function(db)
                db.execute("COMMIT")
            except BaseException as exc:
                db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"SQLite client store: {exc}") from exc
                raise
            return result

    def _table(self, resource: str) -> _Table:
        try:
            return self._tables[resource]
        except KeyError:
            raise StoreError(f"no local table for resource {resource!r}") from None

    def _check(self, resources: Iterable[str]) -> None:
        for resource in resources:
            self._table(resource)

    # -- metadata ------------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        def run(db: sqlite3.Connection) -> str | None:
            row = db.execute(f"SELECT value FROM {META} WHERE key = ?", (key,)).fetchone()
            return row[0] if row else None

        return await self._run(run, write=False)

    async def set_meta(self, key: str, value: str) -> None:
        await self._run(
            lambda db: db.execute(
                f"INSERT OR REPLACE INTO {META} (key, value) VALUES (?, ?)", (key, value)
            ),
            write=True,
        )

    # -- records -------------------------------------------------------------------------------

    @staticmethod
    def _fetch(db: sqlite3.Connection, table: _Table, record_id: str) -> dict[str, Any] | None:
        row = db.execute(table.select_one, (record_id,)).fetchone()
        return orjson.loads(row[0]) if row else None

    async def get(self, resource: str, record_id: str) -> dict[str, Any] | None:
        table = self._table(resource)
        return await self._run(lambda db: self._fetch(db, table, record_id), write=False)

    async def query(self, resource: str, query: Query) -> list[dict[str, Any]]:
        table = self._table(resource)
        scalar = {name for name, is_scalar in table.fields if is_scalar} | {"id"}
        conditions = query.conditions()
        in_sql = [c for c in conditions if c[0] in scalar and _sql_ok(c)]
        in_python = [c for c in conditions if c not in in_sql]
        keys = query.sort_keys()
        sql_sort = all(name in scalar for name, _ in keys)
        where, params = _where(in_sql)
        sql = f"SELECT {RECORD_COLUMN} FROM {_q(resource)}{where}"
        paged_in_sql = not in_python and sql_sort
        if sql_sort:
            order = [f"{_q(n)} {'DESC' if d else 'ASC'}" for n, d in keys] + ["id ASC"]
            sql += " ORDER BY " + ", ".join(order)
        if paged_in_sql and (query.limit is not None or query.offset):
            sql += " LIMIT ? OFFSET ?"
            params += [query.limit if query.limit is not None else -1, query.offset]

        def run(db: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = [orjson.loads(r[0]) for r in db.execute(sql, params)]
            if paged_in_sql:
                return rows
            rows = [r for r in rows if matches(r, in_python)]
            if not sql_sort:
                sort_records(rows, keys)
            end = None if query.limit is None else query.offset + query.limit
            return rows[query.offset : end]

        return await self._run(run, write=False)

    async def count(self, resource: str) -> int:
        table = self._table(resource)
        return await self._run(
            lambda db: int(db.execute(f"SELECT count(*) FROM {_q(table.name)}").fetchone()[0]),
            write=False,
        )

    async def records_after(
        self, resource: str, after_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        table = self._table(resource)
        sql = f"SELECT {RECORD_COLUMN} FROM {_q(table.name)} WHERE id > ? ORDER BY id LIMIT ?"
        return await self._run(
            lambda db: [orjson.loads(r[0]) for r in db.execute(sql, (after_id or "", limit))],
            write=False,
        )

    async def unsynced_records(
        self, resource: str, after_id: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        table = self._table(resource)
        sql = f"SELECT id, {RECORD_COLUMN} FROM {_q(table.name)} WHERE id > ? ORDER BY id LIMIT ?"

        def run(db: sqlite3.Connection) -> tuple[list[dict[str, Any]], str | None]:
            rows = db.execute(sql, (after_id or "", limit)).fetchall()
            bases: dict[str, Any] = {}
            ids = [row[0] for row in rows]
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ", ".join("?" for _ in chunk)
                for record_id, base, known in db.execute(
                    f"SELECT record_id, base, base_known FROM {CHANGELOG} WHERE resource = ?"
                    f" AND state = 'queued' AND record_id IN ({marks}) ORDER BY seq",
                    (resource, *chunk),
                ):
                    if record_id not in bases:  # the oldest entry holds the base
                        bases[record_id] = orjson.loads(base) if known and base else None
            out = []
            for record_id, text in rows:
                if record_id not in bases:
                    out.append(orjson.loads(text))
                elif bases[record_id] is not None:
                    out.append(bases[record_id])
            return out, (ids[-1] if len(ids) == limit else None)

        return await self._run(run, write=False)

    async def synced_records_between(
        self, resource: str, after_id: str | None, until_id: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Reconcile's range read (see ClientStore): the query is bounded on both sides, so a
        small range reads only its own rows."""
        table = self._table(resource)
        bound = "" if until_id is None else " AND id <= ?"
        sql = (
            f"SELECT id, {RECORD_COLUMN} FROM {_q(table.name)} WHERE id > ?{bound} "
            "ORDER BY id LIMIT ?"
        )
        params = (after_id or "", *(() if until_id is None else (until_id,)), limit)

        def run(db: sqlite3.Connection) -> tuple[list[dict[str, Any]], str | None]:
            rows = db.execute(sql, params).fetchall()
            ids = [row[0] for row in rows]
            bases: dict[str, Any] = {}
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ", ".join("?" for _ in chunk)
                for record_id, base, known in db.execute(
                    f"SELECT record_id, base, base_known FROM {CHANGELOG} WHERE resource = ?"
                    f" AND state = 'queued' AND record_id IN ({marks}) ORDER BY seq",
                    (resource, *chunk),
                ):
                    if record_id not in bases:  # the oldest entry holds the base
                        bases[record_id] = orjson.loads(base) if known and base else None
            out = [
                orjson.loads(text) if record_id not in bases else bases[record_id]
                for record_id, text in rows
                if record_id not in bases or bases[record_id] is not None
            ]
            return out, (ids[-1] if len(ids) == limit else None)

        return await self._run(run, write=False)

    # -- local writes and the changelog --------------------------------------------------------

    async def write(self, write: LocalWrite) -> tuple[dict[str, Any] | None, ChangelogEntry]:
        table = self._table(write.resource)

        def run(db: sqlite3.Connection) -> tuple[dict[str, Any] | None, ChangelogEntry]:
            current = self._fetch(db, table, write.record_id)
            if write.operation == "insert" and current is not None:
                raise Conflict(f"a record with id {write.record_id!r} exists already", path="id")
            after = apply_operation(current, write.operation, write.record_id, write.record)
            if after is None:
                db.execute(table.delete_one, (write.record_id,))
            else:
                db.execute(table.upsert, table.row(after))
            # the first queued write of the record: what it replaces is the server's state
            first = db.execute(_HAS_QUEUED, (write.resource, write.record_id)).fetchone() is None
            ready = db.execute(_READY_CURSOR, (write.resource,)).fetchone()
            base_seq = None if ready is None else int(ready[0])
            cursor = db.execute(
                f"INSERT INTO {CHANGELOG} (resource, operation, record_id, record, mutation_id,"
                " version, guard, base, base_known, base_seq)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    write.resource,
                    write.operation,
                    write.record_id,
                    _dumps(write.record) if write.record is not None else None,
                    write.mutation_id,
                    write.version,
                    _dumps(write.guard) if write.guard is not None else None,
                    _dumps(current) if first else None,
                    1 if first else 0,
                    base_seq,
                ),
            )
            seq = cursor.lastrowid
            assert seq is not None
            entry = ChangelogEntry(
                seq=seq,
                resource=write.resource,
                operation=write.operation,
                record_id=write.record_id,
                record=write.record,
                mutation_id=write.mutation_id,
                version=write.version,
                guard=write.guard,
                base_seq=base_seq,
            )
            return after, entry

        return await self._run(run, write=True)

    async def changelog(
        self, *, limit: int | None = None, resource: str | None = None
    ) -> list[ChangelogEntry]:
        sql = f"SELECT {_ENTRY_COLUMNS} FROM {CHANGELOG} WHERE state = 'queued'"
        params: list[Any] = []
        if resource is not None:
            sql += " AND resource = ?"
            params.append(resource)
        sql += " ORDER BY seq LIMIT ?"
        params.append(limit if limit is not None else -1)

        def run(db: sqlite3.Connection) -> list[ChangelogEntry]:
            return [_entry(row) for row in db.execute(sql, params)]

        return await self._run(run, write=False)

    async def pending_count(self) -> int:
        return await self._run(
            lambda db: int(
                db.execute(f"SELECT count(*) FROM {CHANGELOG} WHERE state = 'queued'").fetchone()[0]
            ),
            write=False,
        )

    # -- bases: the server's last known state of records with queued writes --------------------

    @staticmethod
    def _queued(db: sqlite3.Connection, resource: str, record_id: str) -> list[ChangelogEntry]:
        return [
            _entry(row)
            for row in db.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM {CHANGELOG} WHERE resource = ? AND record_id = ?"
                " AND state = 'queued' ORDER BY seq",
                (resource, record_id),
            )
        ]

    @staticmethod
    def _set_base(db: sqlite3.Connection, seq: int, known: bool, base: Any) -> None:
        db.execute(
            f"UPDATE {CHANGELOG} SET base = ?, base_known = ? WHERE seq = ?",
            (_dumps(base) if known else None, 1 if known else 0, seq),
        )

    def _take(
        self, db: sqlite3.Connection, seq: int, *, keep_as: str | None = None
    ) -> tuple[ChangelogEntry, bool, Any, list[ChangelogEntry]] | None:
        """Take a queued entry out of the queue (deleted, or kept as a dead letter with error
        ``keep_as``); return it, its record's base (known?, base) and the entries left."""
        row = db.execute(
            f"SELECT resource, record_id FROM {CHANGELOG} WHERE seq = ? AND state = 'queued'",
            (seq,),
        ).fetchone()
        if row is None:
            return None
        queued = self._queued(db, row[0], row[1])
        oldest = db.execute(
            f"SELECT base, base_known FROM {CHANGELOG} WHERE seq = ?", (queued[0].seq,)
        ).fetchone()
        known = bool(oldest[1])
        base = orjson.loads(oldest[0]) if known and oldest[0] is not None else None
        entry = next(e for e in queued if e.seq == seq)
        if keep_as is None:
            db.execute(f"DELETE FROM {CHANGELOG} WHERE seq = ?", (seq,))
        else:
            db.execute(
                f"UPDATE {CHANGELOG} SET state = 'dead', last_error = ?, base = NULL,"
                " base_known = 0 WHERE seq = ?",
                (keep_as, seq),
            )
        return entry, known, base, [e for e in queued if e.seq != seq]

    async def acknowledge(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        wanted = sorted(set(seqs))

        def run(db: sqlite3.Connection) -> None:
            acked: dict[int, ChangelogEntry] = {}
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ", ".join("?" for _ in chunk)
                for row in db.execute(
                    f"SELECT {_ENTRY_COLUMNS} FROM {CHANGELOG} WHERE state = 'queued'"
                    f" AND seq IN ({marks})",
                    chunk,
                ):
                    acked[row[0]] = _entry(row)
            per_key: dict[tuple[str, str], int] = {}
            for entry in acked.values():
                key = (entry.resource, entry.record_id)
                per_key[key] = per_key.get(key, 0) + 1
            # records with queued writes left: their base moves forward over the acked ones
            for resource, record_id in self._keys_with_more(db, per_key):
                queued = self._queued(db, resource, record_id)
                row = db.execute(
                    f"SELECT base, base_known FROM {CHANGELOG} WHERE seq = ?", (queued[0].seq,)
                ).fetchone()
                known = bool(row[1])
                base = orjson.loads(row[0]) if known and row[0] is not None else None
                for entry in queued:
                    if entry.seq in acked:
                        base = apply_operation(base, entry.operation, entry.record_id, entry.record)
                left = [e for e in queued if e.seq not in acked]
                self._set_base(db, left[0].seq, known, base)
            db.executemany(f"DELETE FROM {CHANGELOG} WHERE seq = ?", [(s,) for s in acked])

        await self._run(run, write=True)

    @staticmethod
    def _keys_with_more(
        db: sqlite3.Connection, counts: Mapping[tuple[str, str], int]
    ) -> list[tuple[str, str]]:
        """The records among ``counts`` that have more queued entries than counted."""
        out: list[tuple[str, str]] = []
        by_resource: dict[str, list[str]] = {}
        for resource, record_id in counts:
            by_resource.setdefault(resource, []).append(record_id)
        for resource, ids in by_resource.items():
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ", ".join("?" for _ in chunk)
                for record_id, total in db.execute(
                    f"SELECT record_id, count(*) FROM {CHANGELOG} WHERE resource = ?"
                    f" AND state = 'queued' AND record_id IN ({marks}) GROUP BY record_id",
                    (resource, *chunk),
                ):
                    if total > counts[(resource, record_id)]:
                        out.append((resource, record_id))
        return out

    def _refuse(
        self, db: sqlite3.Connection, seqs: Sequence[int], keep_as: str | None
    ) -> tuple[list[ChangelogEntry], set[str]]:
        removed: list[ChangelogEntry] = []
        unknown: set[str] = set()
        for seq in sorted(seqs):
            taken = self._take(db, seq, keep_as=keep_as)
            if taken is None:
                continue
            entry, known, base, left = taken
            removed.append(entry)
            if not known:
                unknown.add(entry.resource)
                continue
            if left:
                self._set_base(db, left[0].seq, known, base)
            table = self._table(entry.resource)
            after = replay(base, left)
            if after is None:
                db.execute(table.delete_one, (entry.record_id,))
            else:
                db.execute(table.upsert, table.row(after))
        return removed, unknown

    async def reject(self, seqs: Sequence[int]) -> set[str]:
        return await self._run(lambda db: self._refuse(db, seqs, None)[1], write=True)

    async def dead_letter(self, seqs: Sequence[int], error: str) -> set[str]:
        return await self._run(lambda db: self._refuse(db, seqs, error)[1], write=True)

    async def dead_letters(self) -> list[ChangelogEntry]:
        sql = f"SELECT {_ENTRY_COLUMNS} FROM {CHANGELOG} WHERE state = 'dead' ORDER BY seq"
        return await self._run(lambda db: [_entry(r) for r in db.execute(sql)], write=False)

    async def discard(self, mutation_id: str) -> tuple[ChangelogEntry | None, set[str]]:
        def run(db: sqlite3.Connection) -> tuple[ChangelogEntry | None, set[str]]:
            row = db.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM {CHANGELOG} WHERE mutation_id = ?", (mutation_id,)
            ).fetchone()
            if row is None:
                return None, set()
            entry = _entry(row)
            if entry.state == "dead":
                db.execute(f"DELETE FROM {CHANGELOG} WHERE seq = ?", (entry.seq,))
                return entry, set()
            return entry, self._refuse(db, [entry.seq], None)[1]

        return await self._run(run, write=True)

    async def record_attempt(self, seqs: Sequence[int], error: str | None) -> None:
        if not seqs:
            return
        await self._run(
            lambda db: db.executemany(
                f"UPDATE {CHANGELOG} SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                [(error, s) for s in seqs],
            ),
            write=True,
        )

    # -- sync state ----------------------------------------------------------------------------

    @staticmethod
    def _states(db: sqlite3.Connection, resources: Iterable[str]) -> dict[str, ResourceState]:
        wanted = list(resources)
        out = {r: ResourceState(r) for r in wanted}
        for row in db.execute(
            f"SELECT resource, cursor, hydration, clone_after_id, clone_cursor FROM {SYNC_STATE}"
        ):
            if row[0] in out:
                out[row[0]] = ResourceState(row[0], row[1], row[2], row[3], row[4])
        return out

    @staticmethod
    def _save_state(db: sqlite3.Connection, state: ResourceState) -> None:
        db.execute(
            f"INSERT OR REPLACE INTO {SYNC_STATE} (resource, cursor, hydration, clone_after_id,"
            " clone_cursor) VALUES (?, ?, ?, ?, ?)",
            (
                state.resource,
                state.cursor,
                state.hydration,
                state.clone_after_id,
                state.clone_cursor,
            ),
        )

    async def states(self, resources: Sequence[str]) -> dict[str, ResourceState]:
        return await self._run(lambda db: self._states(db, resources), write=False)

    def _rebase(
        self,
        db: sqlite3.Connection,
        resource: str,
        ids: Iterable[str] | None,
        *,
        server: bool = True,
        guessed: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        """Apply the queued entries of these records (None: of the resource) on top again.
        With ``server``, the records hold server data now: it becomes their base — except for
        the ``guessed`` ones (a merge applied to a local view whose base was not known)."""
        if (
            db.execute(
                f"SELECT 1 FROM {CHANGELOG} WHERE resource = ? AND state = 'queued' LIMIT 1",
                (resource,),
            ).fetchone()
            is None
        ):
            return
        table = self._table(resource)
        base = f"SELECT {_ENTRY_COLUMNS} FROM {CHANGELOG} WHERE resource = ? AND state = 'queued'"
        entries: list[ChangelogEntry] = []
        if ids is None:
            entries = [_entry(r) for r in db.execute(base + " ORDER BY seq", (resource,))]
        else:
            id_list = list(ids)
            for start in range(0, len(id_list), _CHUNK):
                chunk = id_list[start : start + _CHUNK]
                marks = ", ".join("?" for _ in chunk)
                entries += [
                    _entry(r)
                    for r in db.execute(base + f" AND record_id IN ({marks})", (resource, *chunk))
                ]
            entries.sort(key=lambda e: e.seq)
        first: set[str] = set()
        for entry in entries:
            current = self._fetch(db, table, entry.record_id)
            if server and entry.record_id not in first:
                first.add(entry.record_id)
                if entry.record_id not in guessed:
                    self._set_base(db, entry.seq, True, current)
            after = apply_operation(current, entry.operation, entry.record_id, entry.record)
            if after is None:
                db.execute(table.delete_one, (entry.record_id,))
            else:
                db.execute(table.upsert, table.row(after))

    def _server_record(
        self, db: sqlite3.Connection, table: _Table, record_id: str
    ) -> tuple[dict[str, Any] | None, bool]:
        """The record as the server last had it — the base when it has queued writes, else
        the local record — and whether that is known (False: queued writes whose base an
        older version of the store did not keep; the local record is the best guess)."""
        row = db.execute(
            f"SELECT base, base_known FROM {CHANGELOG} WHERE resource = ? AND record_id = ?"
            " AND state = 'queued' ORDER BY seq LIMIT 1",
            (table.name, record_id),
        ).fetchone()
        if row is not None and row[1]:
            return (orjson.loads(row[0]) if row[0] is not None else None), True
        return self._fetch(db, table, record_id), row is None

    async def apply_pull(self, page: PullPage) -> None:
        self._check([*page.records, *page.merged, *page.deleted, *page.cursors])

        def run(db: sqlite3.Connection) -> None:
            touched: dict[str, set[str]] = {}
            guessed: dict[str, set[str]] = {}
            for resource, records in page.records.items():
                table = self._table(resource)
                if records:
                    db.execute(table.upsert_page, (_dumps(records),))
                touched.setdefault(resource, set()).update(r["id"] for r in records)
            for resource, deltas in page.merged.items():
                table = self._table(resource)
                for delta in deltas:
                    current, known = self._server_record(db, table, delta["id"])
                    if not known:
                        guessed.setdefault(resource, set()).add(delta["id"])
                    after = apply_operation(current, "merge", delta["id"], delta)
                    assert after is not None
                    db.execute(table.upsert, table.row(after))
                touched.setdefault(resource, set()).update(d["id"] for d in deltas)
            for resource, ids in page.deleted.items():
                table = self._table(resource)
                db.executemany(table.delete_one, [(i,) for i in ids])
                touched.setdefault(resource, set()).update(ids)
            states = self._states(db, page.cursors)
            for resource, cursor in page.cursors.items():
                state = states[resource]
                state.cursor = max(state.cursor, cursor)
                self._save_state(db, state)
            for resource, touched_ids in touched.items():
                self._rebase(db, resource, touched_ids, guessed=guessed.get(resource, set()))

        await self._run(run, write=True)

    async def apply_clone_page(
        self,
        resource: str,
        records: Sequence[dict[str, Any]],
        *,
        after_id: str | None,
        start_cursor: int | None = None,
        reset: bool = False,
    ) -> None:
        table = self._table(resource)

        def run(db: sqlite3.Connection) -> None:
            state = self._states(db, [resource])[resource]
            if start_cursor is not None:
                if reset:
                    db.execute(f"DELETE FROM {_q(table.name)}")
                    db.execute(  # the bases are known again page by page
                        f"UPDATE {CHANGELOG} SET base = NULL, base_known = 0 WHERE resource = ?"
                        " AND state = 'queued'",
                        (resource,),
                    )
                state.hydration = "hydrating"
                state.clone_cursor = start_cursor
            if records:
                db.execute(table.upsert_page, (_dumps(records),))
            state.clone_after_id = after_id
            self._save_state(db, state)
            self._rebase(db, resource, (r["id"] for r in records))  # ids only when needed

        await self._run(run, write=True)

    async def finish_clone(self, resource: str) -> None:
        def run(db: sqlite3.Connection) -> None:
            state = self._states(db, [resource])[resource]
            # the clone is the server's state as of clone_cursor: pull on from there, even
            # below the old cursor (a server restored from a backup is behind it)
            if state.clone_cursor is not None:
                state.cursor = state.clone_cursor
            state.hydration = "ready"
            state.clone_after_id = None
            state.clone_cursor = None
            self._save_state(db, state)
            # records with queued writes that no clone page brought are absent on the server
            db.execute(
                f"UPDATE {CHANGELOG} SET base = 'null', base_known = 1 WHERE resource = ?"
                " AND state = 'queued' AND base_known = 0 AND seq IN (SELECT min(seq) FROM"
                f" {CHANGELOG} WHERE resource = ? AND state = 'queued' GROUP BY record_id)",
                (resource, resource),
            )
            self._rebase(db, resource, None, server=False)

        await self._run(run, write=True)

    async def reset_hydration(self, resource: str) -> None:
        def run(db: sqlite3.Connection) -> None:
            state = self._states(db, [resource])[resource]
            state.hydration = "hydrating"
            state.clone_after_id = None
            state.clone_cursor = None
            self._save_state(db, state)

        await self._run(run, write=True)


_ENTRY_COLUMNS = (
    "seq, resource, operation, record_id, record, mutation_id, version, guard, attempts,"
    " last_error, state, base_seq"
)
#: the cursor of a resource that is ``ready`` (no row otherwise): a write's base_seq
_READY_CURSOR = f"SELECT cursor FROM {SYNC_STATE} WHERE resource = ? AND hydration = 'ready'"
_HAS_QUEUED = (
    f"SELECT 1 FROM {CHANGELOG} WHERE resource = ? AND record_id = ? AND state = 'queued' LIMIT 1"
)


#: The changelog's columns; those from _CHANGELOG_FIRST on were added after the first version
#: and are added to older files on open.
_CHANGELOG_COLUMNS = (
    ("seq", "INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT"),
    ("resource", "TEXT NOT NULL"),
    ("operation", "TEXT NOT NULL"),
    ("record_id", "TEXT NOT NULL"),
    ("record", "TEXT"),
    ("mutation_id", "TEXT NOT NULL"),
    ("version", "INTEGER NOT NULL"),
    ("guard", "TEXT"),
    ("attempts", "INTEGER DEFAULT '0' NOT NULL"),
    ("last_error", "TEXT"),
    ("state", "TEXT DEFAULT 'queued' NOT NULL"),
    # the record's base (JSON) on its oldest queued entry; base_known 0: not known
    ("base", "TEXT"),
    ("base_known", "INTEGER DEFAULT '0' NOT NULL"),
    # the resource's cursor when the write was made (sent as baseSeq); NULL: not hydrated
    ("base_seq", "INTEGER"),
)
_CHANGELOG_FIRST = 8
_CHANGELOG_INDEX = "ix_datafn_changelog_record"


def _create(table: str, columns: Sequence[str], options: str = "") -> str:
    body = ", \n\t".join(columns)
    return f"CREATE TABLE IF NOT EXISTS {_q(table)} (\n\t{body}\n){options}"


def _connect_args(url: str) -> tuple[str, dict[str, Any]]:
    """The database and ``sqlite3.connect`` options a store URL names, read as SQLAlchemy's
    SQLite dialect reads it (relative paths are relative to the working directory).

    Plain URLs are read here; SQLAlchemy is imported only for URLs with options
    (``?timeout=5``, ``?uri=true``), percent-escapes or anything else unusual.
    """
    scheme, sep, rest = url.partition("://")
    plain = sep and scheme.lower() in ("sqlite", "sqlite+pysqlite")
    if plain and (rest == "" or rest.startswith("/")) and not any(c in rest for c in "?#%"):
        database = rest[1:]
        if database in ("", ":memory:"):
            return ":memory:", {}
        return os.path.abspath(database), {}
    import sqlalchemy as sa
    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

    try:
        parsed = sa.make_url(url)
        args, options = SQLiteDialect_pysqlite().create_connect_args(parsed)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise StoreError(f"not a SQLite store URL: {exc}") from exc
    options.pop("check_same_thread", None)  # the store's one connection is always shared
    return str(args[0]), dict(options)


def _entry(row: Sequence[Any]) -> ChangelogEntry:
    return ChangelogEntry(
        seq=row[0],
        resource=row[1],
        operation=row[2],
        record_id=row[3],
        record=orjson.loads(row[4]) if row[4] is not None else None,
        mutation_id=row[5],
        version=row[6],
        guard=orjson.loads(row[7]) if row[7] is not None else None,
        attempts=row[8],
        last_error=row[9],
        state=row[10],
        base_seq=row[11],
    )


def _sql_ok(condition: tuple[str, str, Any]) -> bool:
    """Conditions SQLite evaluates exactly like :func:`datafn.client.store.matches`."""
    _name, op, value = condition
    values = value if op in ("in", "nin") else [value]
    if not all(v is None or isinstance(v, str | int | float) for v in values):
        return False
    if op == "contains":
        return isinstance(value, str)
    return True


def _where(conditions: Sequence[tuple[str, str, Any]]) -> tuple[str, list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    for name, op, value in conditions:
        col = _q(name)
        if op == "eq":
            parts.append(f"{col} IS ?")
            params.append(value)
        elif op == "ne":
            parts.append(f"{col} IS NOT ?")
            params.append(value)
        elif op in ("in", "nin"):
            values = list(value)
            marks = ", ".join("?" for _ in values)
            if not values:
                parts.append("0" if op == "in" else "1")
            elif op == "in":
                parts.append(f"{col} IN ({marks})")
            else:
                parts.append(f"({col} IS NULL OR {col} NOT IN ({marks}))")
            params += values
        elif op == "contains":
            parts.append(f"instr({col}, ?) > 0")
            params.append(value)
        else:
            sign = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
            parts.append(f"{col} {sign} ?")
            params.append(value)
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


@hookimpl(trylast=True)
def datafn_register_client_stores(registry: Registry[Any]) -> None:
    registry.add("sqlite", SqliteClientStore, description="one SQLite file, one table per resource")
