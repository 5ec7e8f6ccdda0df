"""The SQL server store: SQLite (default) and PostgreSQL through SQLAlchemy Core.

Tables (every row carries its namespace):

- ``datafn_records_<resource>``: one table per resource, ``(namespace, id)`` → JSON text;
- ``datafn_changes``: the change log, primary key ``(namespace, seq)``, also indexed by
  ``(namespace, resource, seq)`` for pulls;
- ``datafn_idempotency``: ``(namespace, client_id, mutation_id)`` → the mutation's outcome;
- ``datafn_counters``: the seq counter of each namespace;
- ``datafn_meta``: the store's format version;
- ``datafn_marks``, ``datafn_retention``, ``datafn_floors``: retention's time marks, walk
  positions and compaction floors per namespace (docs/server.md, "Retention").

Tables and columns that are missing are created on open (a new resource gets its table; a
newer store version adds its columns); nothing is ever dropped.

A write (push or seed) runs in one transaction that first takes the namespace's seq lock and
keeps it until it commits: ``BEGIN IMMEDIATE`` on SQLite (one writer per database, across
processes), the row lock of the namespace's counter row on PostgreSQL (one writer per
namespace, across processes and machines). Commits therefore happen in seq order, which is the
protocol's visibility rule. The synchronous engine runs in worker threads, except the short
reads of a pull or a cursor lookup on an SQLite file: those run on the calling thread (see
:meth:`SqlServerStore._read_now`).
"""

from __future__ import annotations

import functools
import hashlib
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from datafn.errors import ConfigError, StoreError
from datafn.schema import Schema
from datafn.server.mutations import (
    MAX_CONFLICT_HISTORY,
    RecordHistory,
    history_wanted,
    plan_push,
    plan_seed,
    touched_keys,
)
from datafn.server.retention import plan_compaction
from datafn.server.store import (
    EXPIRE_ID,
    Change,
    CompactionStep,
    PendingMutation,
    PushOutcome,
    RecordTexts,
    ServerStore,
)

__all__ = ["FORMAT_VERSION", "SqlServerStore", "records_table_name"]

#: Version of the table layout, kept in datafn_meta.
FORMAT_VERSION = 1

#: Milliseconds each statement of the readiness check may take on PostgreSQL (the health
#: probe answers 503 after 5 s whatever the store does; this frees the worker thread too).
READY_STATEMENT_TIMEOUT_MS = 5000

T = TypeVar("T")

#: The most changes a pull reads on the calling thread; a longer answer is read in a worker
#: thread (what blocks the event loop stays small whatever the pull's limit).
NOW_ROWS = 64


def records_table_name(resource: str) -> str:
    """``datafn_records_<resource>``, shortened with a hash past PostgreSQL's 63 characters."""
    name = f"datafn_records_{resource}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(resource.encode()).hexdigest()[:8]
    return f"{name[:54]}_{digest}"


def normalize_url(url: str) -> str:
    """Select the psycopg 3 driver for plain ``postgresql://`` / ``postgres://`` URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class _Tables:
    """The table definitions for one schema and dialect."""

    def __init__(self, schema: Schema, dialect: str) -> None:
        self.metadata = sa.MetaData()
        # Ids sort by code point everywhere: "C" collation on PostgreSQL, BINARY on SQLite.
        id_type = sa.Text(collation="C") if dialect == "postgresql" else sa.Text()
        # Keys of the hot tables compare bytewise too on PostgreSQL (cheaper index inserts and
        # probes than a locale's collation; tables created by an older version keep theirs).
        key_type = id_type
        self.meta = sa.Table(
            "datafn_meta",
            self.metadata,
            sa.Column("key", sa.Text, primary_key=True),
            sa.Column("value", sa.Text, nullable=False),
        )
        self.counters = sa.Table(
            "datafn_counters",
            self.metadata,
            sa.Column("namespace", key_type, primary_key=True),
            sa.Column("seq", sa.BigInteger, nullable=False),
        )
        self.changes = sa.Table(
            "datafn_changes",
            self.metadata,
            sa.Column("namespace", key_type, primary_key=True),
            sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("resource", key_type, nullable=False),
            sa.Column("record_id", id_type, nullable=False),
            sa.Column("op", sa.Text, nullable=False),
            sa.Column("data", sa.Text, nullable=True),
            # provenance: the pushing client (NULL for seeds and rows older than the column)
            # and the conflict the change overwrote, as JSON
            sa.Column("client_id", key_type, nullable=True),
            sa.Column("conflict", sa.Text, nullable=True),
            sa.Index("datafn_changes_by_resource", "namespace", "resource", "seq"),
            # retention: a record's rows before or after a seq
            sa.Index("datafn_changes_by_record", "namespace", "resource", "record_id", "seq"),
        )
        self.idempotency = sa.Table(
            "datafn_idempotency",
            self.metadata,
            sa.Column("namespace", key_type, primary_key=True),
            sa.Column("client_id", key_type, primary_key=True),
            sa.Column("mutation_id", key_type, primary_key=True),
            sa.Column("outcome", sa.Text, nullable=False),
            sa.Column("created_at", sa.Float, nullable=True),
            sa.Index("datafn_idempotency_by_age", "created_at"),
        )
        self.marks = sa.Table(
            "datafn_marks",
            self.metadata,
            sa.Column("namespace", sa.Text, primary_key=True),
            sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("at", sa.Float, nullable=False),
        )
        self.retention = sa.Table(
            "datafn_retention",
            self.metadata,
            sa.Column("namespace", sa.Text, primary_key=True),
            sa.Column("compacted_to", sa.BigInteger, nullable=False),
            sa.Column("tombstones_to", sa.BigInteger, nullable=False),
        )
        self.floors = sa.Table(
            "datafn_floors",
            self.metadata,
            sa.Column("namespace", sa.Text, primary_key=True),
            sa.Column("resource", sa.Text, primary_key=True),
            sa.Column("seq", sa.BigInteger, nullable=False),
        )
        self.records: dict[str, sa.Table] = {}
        for resource in schema.resources:
            self.records[resource.name] = sa.Table(
                records_table_name(resource.name),
                self.metadata,
                sa.Column("namespace", key_type, primary_key=True),
                sa.Column("id", id_type, primary_key=True),
                sa.Column("data", sa.Text, nullable=False),
                sa.Column("seq", sa.BigInteger, nullable=False),
            )


#: The idempotency records of a batch on PostgreSQL: one primary-key probe per mutation id (a
#: correlated subquery, which the planner cannot turn into a scan), whatever the statistics
#: say; with ``mutation_id = ANY(…)`` or a join it may read every record of the client and
#: filter them, a cost that grows with the data. Ids without a record answer NULL.
REPLAYS_SQL_POSTGRESQL = (
    "SELECT u.mid, (SELECT outcome FROM datafn_idempotency WHERE namespace = %(ns)s "
    "AND client_id = %(client)s AND mutation_id = u.mid) FROM unnest(%(mids)s::text[]) AS u(mid)"
)


_HISTORY_COLUMNS = "seq, resource, record_id, op, data, client_id, conflict"

#: Conflict detection on PostgreSQL: per (resource, record id, base) of a batch, the record's
#: latest change-log rows above the base, newest first, one backward walk of
#: ``datafn_changes_by_record`` each (a lateral subquery with a LIMIT stays a nested loop of
#: index walks whatever the statistics say), in one statement.
HISTORY_SQL_POSTGRESQL = (
    "SELECT c.seq, c.resource, c.record_id, c.op, c.data, c.client_id, c.conflict "
    "FROM unnest(%(res)s::text[], %(ids)s::text[], %(bases)s::bigint[]) "
    "AS k(resource, record_id, base) "
    f"CROSS JOIN LATERAL (SELECT {_HISTORY_COLUMNS} FROM datafn_changes d "
    "WHERE d.namespace = %(ns)s AND d.resource = k.resource "
    'AND d.record_id = k.record_id COLLATE "C" AND d.seq > k.base '
    f"ORDER BY d.seq DESC LIMIT {MAX_CONFLICT_HISTORY + 1}) AS c"
)


#: Planner settings of the store's PostgreSQL sessions. Every hot read is a walk of an index
#: in its order (a clone page by primary key, a pull by ``(namespace, resource, seq)``, the
#: latest seq of a resource backwards) or a primary-key probe. With statistics that are stale
#: (a table that grew since the last ANALYZE looks tiny) the planner may prefer a bitmap scan
#: of every matching row plus a sort, which reads the whole table for each page: a clone then
#: costs O(n²). Sorts and bitmap scans are disabled (still used when no other plan exists),
#: so the plans stay the index walks whatever the statistics say. JIT is off: a plan that
#: keeps a disabled step (the sort of a short result) is costed high enough to be compiled,
#: which takes longer than running it.
PLANNER_OPTIONS_POSTGRESQL = "-c enable_sort=off -c enable_bitmapscan=off -c jit=off"

#: Creates the namespace's counter row when missing and locks it until the transaction ends
#: (the no-op update takes the row lock as ``SELECT … FOR UPDATE`` would), in one statement.
LOCK_COUNTER_SQL_POSTGRESQL = (
    "INSERT INTO datafn_counters AS c (namespace, seq) VALUES (%(ns)s, 0) "
    "ON CONFLICT (namespace) DO UPDATE SET seq = c.seq RETURNING seq"
)


class SqlServerStore(ServerStore):
    """A server store on SQLite or PostgreSQL (chosen by the URL's scheme)."""

    def __init__(self, url: str, schema: Schema, config: Any = None, *, pool_size: int = 8) -> None:
        super().__init__(normalize_url(url), schema, config)
        self.dialect = sa.make_url(self.url).get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigError(
                f"the SQL server store supports sqlite and postgresql, not {self.dialect!r}",
                key="tool.datafn.server.database",
            )
        self.name = self.dialect
        self.pool_size = pool_size
        self.tables = _Tables(schema, self.dialect)
        self._engine: Engine | None = None
        database = sa.make_url(self.url).database
        self._in_memory = self.dialect == "sqlite" and database in (None, "", ":memory:")
        # An in-memory SQLite database is one connection: one operation at a time.
        self._limiter = anyio.CapacityLimiter(1 if self._in_memory else pool_size)
        # SQLite has one writer per database anyway; queueing writers of this process on a
        # lock is cheaper than letting them spin on SQLITE_BUSY.
        self._write_lock = threading.Lock()
        self._statements: dict[Any, Any] = {}
        # Short reads on an SQLite file go through a one-connection engine of their own, on
        # the calling thread (the lock keeps a second thread off it: that one hops instead).
        self._now_engine: Engine | None = None
        self._now_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        if self._engine is None:
            await self._run(self._open)

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        now_engine, self._now_engine = self._now_engine, None
        if now_engine is not None:
            await anyio.to_thread.run_sync(self._dispose_now, now_engine)
        if engine is not None:
            await anyio.to_thread.run_sync(engine.dispose)

    def _dispose_now(self, engine: Engine) -> None:
        with self._now_lock:  # not while another thread reads through it
            engine.dispose()

    def _open(self) -> None:
        url = sa.make_url(self.url)
        now_engine: Engine | None = None
        if self.dialect == "sqlite":
            options: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 60}}
            if self._in_memory:
                options["poolclass"] = StaticPool
            else:
                options["pool_size"] = self.pool_size
                options["max_overflow"] = 0
            engine = sa.create_engine(url, **options)
            sa.event.listen(engine, "connect", _sqlite_connect)
            sa.event.listen(engine, "begin", _sqlite_begin)
            if not self._in_memory:
                # timeout 0: a read that would wait for a lock fails at once (and hops)
                now_engine = sa.create_engine(
                    url,
                    poolclass=StaticPool,
                    connect_args={"check_same_thread": False, "timeout": 0},
                )
                sa.event.listen(now_engine, "connect", _sqlite_connect_reader)
        else:
            engine = sa.create_engine(
                url,
                pool_size=self.pool_size,
                max_overflow=0,
                pool_timeout=60,
                connect_args={"options": PLANNER_OPTIONS_POSTGRESQL},
            )
        try:
            self._migrate(engine)
        except Exception:
            engine.dispose()
            if now_engine is not None:
                now_engine.dispose()
            raise
        self._engine, self._now_engine = engine, now_engine

    def _migrate(self, engine: Engine) -> None:
        tables = self.tables
        with engine.connect().execution_options(datafn_write=True) as conn, conn.begin():
            if self.dialect == "postgresql":
                # Several servers may start at once: serialise the DDL.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7406318)")
                # The reflection below reads the system catalogs, which the session's
                # planner options (made for the store's own tables) would make look costly
                # enough to be JIT-compiled: about a second for each of its queries.
                for setting in ("enable_sort = on", "enable_bitmapscan = on", "jit = off"):
                    conn.exec_driver_sql(f"SET LOCAL {setting}")
            tables.metadata.create_all(conn, checkfirst=True)
            inspector = sa.inspect(conn)
            for table in tables.metadata.sorted_tables:
                present = {c["name"] for c in inspector.get_columns(table.name)}
                for column in table.columns:
                    if column.name not in present:  # additive migration of an older layout
                        kind = column.type.compile(dialect=engine.dialect)
                        conn.exec_driver_sql(
                            f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'
                        )
                for index in table.indexes:
                    index.create(conn, checkfirst=True)
            found = conn.execute(
                sa.select(tables.meta.c.value).where(tables.meta.c.key == "format")
            ).scalar()
            if found is None:
                conn.execute(tables.meta.insert().values(key="format", value=str(FORMAT_VERSION)))
            elif int(found) > FORMAT_VERSION:
                raise StoreError(
                    f"the database was written by a newer datafn-sqlmodel (format {found}); "
                    "upgrade datafn-sqlmodel"
                )

    async def check_ready(self) -> None:
        await self._run(self._check_ready)

    def _check_ready(self) -> None:
        """The layout is this version's and every table answers with all its columns (no row
        is read). A pooled connection the database dropped is replaced once (a restarted
        PostgreSQL is ready on the first check after it is back). On PostgreSQL each statement
        is bounded (``READY_STATEMENT_TIMEOUT_MS``, in a transaction rolled back at the end, so
        the pooled connection keeps its settings): a database that hangs fails the check."""
        for attempt in range(2):
            try:
                with self._read() if self.dialect != "postgresql" else self._bounded() as conn:
                    found = conn.execute(
                        sa.select(self.tables.meta.c.value).where(
                            self.tables.meta.c.key == "format"
                        )
                    ).scalar()
                    if found != str(FORMAT_VERSION):
                        raise StoreError("the store's tables are not in place")
                    for table in self.tables.metadata.sorted_tables:
                        conn.execute(sa.select(*table.columns).where(sa.false())).close()
                return
            except sa.exc.DBAPIError as exc:
                if attempt or not exc.connection_invalidated:
                    raise

    def _bounded(self) -> Connection:
        """A PostgreSQL connection in a transaction whose statements time out after
        ``READY_STATEMENT_TIMEOUT_MS`` (``SET LOCAL``: undone when the transaction ends)."""
        conn = self.engine.connect()
        try:
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {READY_STATEMENT_TIMEOUT_MS}")
        except BaseException:
            conn.close()
            raise
        return conn

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(func, *args), limiter=self._limiter)

    async def _read_now(self, func: Callable[..., T], *args: Any) -> T:
        """Run a short, bounded read ``func(conn, *args)``.

        On an SQLite file it runs on the calling thread: a reader in WAL mode never waits for
        the writer, the read is a few index lookups (at most :data:`NOW_ROWS` changes), and
        the hop to a worker thread and back costs more than the read itself (most of a pull's
        time on the server). When the database is locked anyway (another process holding it
        exclusively, a recovery) or another thread is using the reader connection, the read
        goes to a worker thread, like every read on PostgreSQL and on an in-memory SQLite
        database.
        """
        engine = self._now_engine
        if engine is not None and self._now_lock.acquire(blocking=False):
            try:
                with engine.connect() as conn:
                    return func(conn, *args)
            except sa.exc.OperationalError as exc:
                if not _is_busy(exc):
                    raise
            finally:
                self._now_lock.release()
        return await self._run(self._in_read, func, *args)

    def _in_read(self, func: Callable[..., T], *args: Any) -> T:
        with self._read() as conn:
            return func(conn, *args)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise StoreError("the server store is not open")
        return self._engine

    def _read(self) -> Connection:
        conn = self.engine.connect()
        if self.dialect == "postgresql":
            # Every read statement is a snapshot of its own anyway (READ COMMITTED): in
            # autocommit, psycopg sends no BEGIN and the connection's return no ROLLBACK,
            # two round trips of the three an empty pull's read cost.
            conn.execution_options(isolation_level="AUTOCOMMIT")
        return conn

    def _records(self, resource: str) -> sa.Table:
        try:
            return self.tables.records[resource]
        except KeyError:
            raise StoreError(f"no table for resource {resource!r}") from None

    # -- writes ------------------------------------------------------------------------------

    def _write(self, work: Callable[[Connection], T]) -> T:
        lock = self._write_lock if self.dialect == "sqlite" else None
        if lock is not None:
            lock.acquire()
        try:
            with (
                self.engine.connect().execution_options(datafn_write=True) as conn,
                conn.begin(),
            ):
                return work(conn)
        finally:
            if lock is not None:
                lock.release()

    def _lock_counter(self, conn: Connection, namespace: str) -> int:
        if self.dialect == "postgresql":
            # one round trip: the no-op update locks the row (created when missing) until
            # the transaction ends, like SELECT … FOR UPDATE
            row = conn.exec_driver_sql(LOCK_COUNTER_SQL_POSTGRESQL, {"ns": namespace}).scalar_one()
        else:  # BEGIN IMMEDIATE already holds the database's write lock
            conn.exec_driver_sql(
                "INSERT OR IGNORE INTO datafn_counters (namespace, seq) VALUES (?, 0)",
                (namespace,),
            )
            row = conn.exec_driver_sql(
                "SELECT seq FROM datafn_counters WHERE namespace = ?", (namespace,)
            ).scalar_one()
        return int(row)

    def _set_counter(self, conn: Connection, namespace: str, seq: int) -> None:
        p = self._param
        conn.exec_driver_sql(
            f"UPDATE datafn_counters SET seq = {p('seq')} WHERE namespace = {p('ns')}",
            {"seq": seq, "ns": namespace},
        )

    def _load(
        self,
        conn: Connection,
        namespace: str,
        keys: Mapping[str, set[str]],
        record_seqs: dict[tuple[str, str], int] | None = None,
    ) -> dict[tuple[str, str], dict[str, Any] | None]:
        """The stored records of ``keys``; with ``record_seqs``, their seqs too (same
        statements) into it."""
        existing: dict[tuple[str, str], dict[str, Any] | None] = {}
        for resource, ids in keys.items():
            table = self._records(resource).name
            id_list = list(ids)
            if self.dialect == "postgresql":
                rows = conn.exec_driver_sql(
                    self._load_sql_postgresql(resource, with_seq=record_seqs is not None),
                    {"ns": namespace, "ids": id_list},
                )
                for record_id, data, *seq in rows:
                    if data is not None:
                        existing[(resource, record_id)] = orjson.loads(data)
                        if record_seqs is not None:
                            record_seqs[(resource, record_id)] = int(seq[0])
                continue
            columns = "id, data, seq" if record_seqs is not None else "id, data"
            for start in range(0, len(id_list), 500):
                params: dict[str, Any] = {"ns": namespace}
                among = self._among("id", id_list[start : start + 500], params)
                rows = conn.exec_driver_sql(
                    f'SELECT {columns} FROM "{table}" '
                    f"WHERE namespace = {self._param('ns')} AND id {among}",
                    params,
                )
                for record_id, data, *seq in rows:
                    existing[(resource, record_id)] = orjson.loads(data)
                    if record_seqs is not None:
                        record_seqs[(resource, record_id)] = int(seq[0])
        return existing

    # Bulk writes are one statement per table: executemany of a prepared statement on SQLite,
    # COPY on PostgreSQL (about three times faster than INSERT … SELECT FROM unnest(…) of the
    # same rows); updates by primary key are an executemany there too, which psycopg sends
    # in one pipeline.

    def _param(self, name: str) -> str:
        return f"%({name})s" if self.dialect == "postgresql" else f":{name}"

    def _among(self, name: str, values: Sequence[str], params: dict[str, Any]) -> str:
        """``IN (…)`` of text ``values`` for driver SQL, binding them into ``params``."""
        if self.dialect == "postgresql":
            params[name] = list(values)
            return f"= ANY(%({name})s::text[])"
        names = [f"{name}{i}" for i in range(len(values))]
        params.update(zip(names, values, strict=True))
        return "IN (" + ", ".join(f":{n}" for n in names) + ")"

    def _bulk_insert(
        self,
        conn: Connection,
        table: str,
        columns: Sequence[str],
        types: Sequence[str],
        namespace: str,
        rows: list[tuple[Any, ...]],
        conflict: str = "",
    ) -> None:
        if not rows:
            return
        names = ", ".join(["namespace", *columns])
        if self.dialect == "postgresql" and not conflict:
            self._copy(conn, table, names, namespace, rows)
        elif self.dialect == "postgresql":
            arrays = ", ".join(f"%(c{i})s::{kind}[]" for i, kind in enumerate(types))
            alias = ", ".join(f"c{i}" for i in range(len(columns)))
            params: dict[str, Any] = {"ns": namespace}
            for i, column in enumerate(zip(*rows, strict=True)):
                params[f"c{i}"] = list(column)
            conn.exec_driver_sql(
                f'INSERT INTO "{table}" ({names}) SELECT %(ns)s, {alias} '
                f"FROM unnest({arrays}) AS u({alias}) {conflict}",
                params,
            )
        else:
            marks = ", ".join("?" * (len(columns) + 1))
            conn.exec_driver_sql(
                f'INSERT INTO "{table}" ({names}) VALUES ({marks}) {conflict}',
                [(namespace, *row) for row in rows],
            )

    def _copy(
        self, conn: Connection, table: str, names: str, namespace: str, rows: list[tuple[Any, ...]]
    ) -> None:
        """``COPY table (names) FROM STDIN`` of ``(namespace, *row)`` for each row (PostgreSQL),
        on the connection's open transaction."""
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            with cursor.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
                write = copy.write_row
                for row in rows:
                    write((namespace, *row))
        finally:
            cursor.close()

    def _write_records(
        self,
        conn: Connection,
        namespace: str,
        writes: Mapping[tuple[str, str], dict[str, Any] | None],
        seqs: Mapping[tuple[str, str], int],
        *,
        existing: Mapping[tuple[str, str], Any] | None = None,
        texts: Mapping[tuple[str, str], tuple[Any, str]] | None = None,
    ) -> None:
        """Write the final state of each record of ``writes`` (None: delete it).

        :param existing: the records stored when the transaction (holding the namespace lock)
            began, when known: then a new record is inserted and a stored one updated (COPY
            and primary-key updates on PostgreSQL) instead of an upsert of each.
        :param texts: per key, a record object and its JSON text already made (by
            :meth:`_log`), reused when the record written is that object.
        """
        upserts: dict[str, list[tuple[Any, ...]]] = {}
        inserts: dict[str, list[tuple[Any, ...]]] = {}
        updates: dict[str, list[tuple[Any, ...]]] = {}
        deletes: dict[str, list[str]] = {}
        dumps = orjson.dumps
        known = texts or {}
        for key, record in writes.items():
            resource, record_id = key
            if record is None:
                if existing is None or key in existing:
                    deletes.setdefault(resource, []).append(record_id)
                continue
            made = known.get(key)
            text = made[1] if made is not None and made[0] is record else dumps(record).decode()
            row = (record_id, text, seqs[key])
            if existing is None:
                upserts.setdefault(resource, []).append(row)
            elif key in existing:
                updates.setdefault(resource, []).append(row)
            else:
                inserts.setdefault(resource, []).append(row)
        p = self._param
        for resource, rows in inserts.items():
            self._bulk_insert(
                conn, self._records(resource).name, ("id", "data", "seq"), (), namespace, rows
            )
        for resource, rows in updates.items():
            conn.exec_driver_sql(
                f'UPDATE "{self._records(resource).name}" SET data = {p("data")}, '
                f"seq = {p('seq')} WHERE namespace = {p('ns')} AND id = {p('id')}",
                [
                    {"data": text, "seq": seq, "ns": namespace, "id": record_id}
                    for record_id, text, seq in rows
                ],
            )
        for resource, rows in upserts.items():
            self._bulk_insert(
                conn,
                self._records(resource).name,
                ("id", "data", "seq"),
                ("text", "text", "bigint"),
                namespace,
                rows,
                "ON CONFLICT (namespace, id) DO UPDATE SET data = excluded.data, "
                "seq = excluded.seq",
            )
        for resource, ids in deletes.items():
            table = self._records(resource).name
            # one primary-key delete per id (one pipeline on PostgreSQL)
            conn.exec_driver_sql(
                f'DELETE FROM "{table}" WHERE namespace = {p("ns")} AND id = {p("id")}',
                [{"ns": namespace, "id": record_id} for record_id in ids],
            )

    def _log(
        self,
        conn: Connection,
        namespace: str,
        changes: Sequence[Change],
        texts: dict[tuple[str, str], tuple[Any, str]] | None = None,
    ) -> dict[tuple[str, str], int]:
        """Append ``changes`` to the change log; answers the last seq of each key. ``texts``
        receives, per key, the last change's data and its JSON text (see _write_records)."""
        seqs: dict[tuple[str, str], int] = {}
        rows = []
        dumps = orjson.dumps
        for change in changes:
            key = (change.resource, change.id)
            seqs[key] = change.seq
            data = None if change.data is None else dumps(change.data).decode()
            if texts is not None and data is not None:
                texts[key] = (change.data, data)
            conflict = None if change.conflict is None else dumps(change.conflict).decode()
            rows.append(
                (
                    change.seq,
                    change.resource,
                    change.id,
                    change.op,
                    data,
                    change.client_id,
                    conflict,
                )
            )
        self._bulk_insert(
            conn,
            "datafn_changes",
            ("seq", "resource", "record_id", "op", "data", "client_id", "conflict"),
            ("bigint", "text", "text", "text", "text", "text", "text"),
            namespace,
            rows,
        )
        return seqs

    def _apply_push(
        self, namespace: str, client_id: str, mutations: Sequence[PendingMutation]
    ) -> PushOutcome:
        def work(conn: Connection) -> PushOutcome:
            mids = list({m.mutation_id for m in mutations})
            keys = touched_keys(mutations)
            # the records' seqs are read with them only when a mutation has a baseSeq
            record_seqs: dict[tuple[str, str], int] | None = (
                {} if any(m.base_seq is not None for m in mutations) else None
            )
            if self.dialect == "postgresql":
                before, replays, existing = self._read_push_postgresql(
                    conn, namespace, client_id, mids, keys, record_seqs
                )
            else:
                before = self._lock_counter(conn, namespace)
                replays, existing = self._read_push_sqlite(
                    conn, namespace, client_id, mids, keys, record_seqs
                )
            history = None
            if record_seqs is not None:
                wanted = history_wanted(mutations, existing, record_seqs)
                history = self._history(conn, namespace, wanted) if wanted else None
            plan = plan_push(
                self.schema,
                mutations,
                existing=existing,
                replays=replays,
                seq=before,
                client_id=client_id,
                history=history,
                rules=self.conflict_rules,
            )
            texts: dict[tuple[str, str], tuple[Any, str]] = {}
            seqs = self._log(conn, namespace, plan.changes, texts)
            self._write_records(conn, namespace, plan.writes, seqs, existing=existing, texts=texts)
            now = time.time()
            self._bulk_insert(
                conn,
                "datafn_idempotency",
                ("client_id", "mutation_id", "outcome", "created_at"),
                ("text", "text", "text", "float8"),
                namespace,
                [
                    (client_id, mid, orjson.dumps(outcome).decode(), now)
                    for mid, outcome in plan.idempotency.items()
                ],
            )
            if plan.last_seq != before:
                self._set_counter(conn, namespace, plan.last_seq)
            return PushOutcome(plan.results, before, plan.last_seq, plan.cursors, plan.conflicts)

        return self._write(work)

    def _read_push_postgresql(
        self,
        conn: Connection,
        namespace: str,
        client_id: str,
        mids: list[str],
        keys: Mapping[str, set[str]],
        record_seqs: dict[tuple[str, str], int] | None = None,
    ) -> tuple[int, dict[str, Any], dict[tuple[str, str], dict[str, Any] | None]]:
        """Lock the namespace's counter, then read the batch's idempotency records and the
        records it touches: three statements in one pipeline (one round trip). The reads run
        after the lock is granted, each with a snapshot taken then. With ``record_seqs`` the
        records' seqs are read too (same statements) into it."""
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.pipeline():
            lock = raw.execute(LOCK_COUNTER_SQL_POSTGRESQL, {"ns": namespace})
            found = raw.execute(
                REPLAYS_SQL_POSTGRESQL, {"ns": namespace, "client": client_id, "mids": mids}
            )
            loads = [
                (
                    resource,
                    raw.execute(
                        self._load_sql_postgresql(resource, with_seq=record_seqs is not None),
                        {"ns": namespace, "ids": list(ids)},
                    ),
                )
                for resource, ids in keys.items()
            ]
        row = lock.fetchone()
        assert row is not None
        loads_json = orjson.loads
        replays = {mid: loads_json(text) for mid, text in found if text is not None}
        existing: dict[tuple[str, str], dict[str, Any] | None] = {}
        for resource, cursor in loads:
            for record_id, data, *seq in cursor:
                if data is not None:
                    existing[(resource, record_id)] = loads_json(data)
                    if record_seqs is not None:
                        record_seqs[(resource, record_id)] = int(seq[0])
        return int(row[0]), replays, existing

    def _load_sql_postgresql(self, resource: str, *, with_seq: bool) -> str:
        """The records of ``ids`` (and their seqs): one primary-key probe per id whatever the
        statistics say (see REPLAYS_SQL_…; ``LIMIT 1`` keeps the lateral subquery a probe)."""
        table = self._records(resource).name
        if not with_seq:
            return (
                f'SELECT u.id, (SELECT data FROM "{table}" WHERE namespace = %(ns)s '
                "AND id = u.id) FROM unnest(%(ids)s::text[]) AS u(id)"
            )
        return (
            "SELECT u.id, r.data, r.seq FROM unnest(%(ids)s::text[]) AS u(id) "
            f'LEFT JOIN LATERAL (SELECT data, seq FROM "{table}" WHERE namespace = %(ns)s '
            "AND id = u.id LIMIT 1) AS r ON true"
        )

    def _history(
        self, conn: Connection, namespace: str, wanted: Mapping[tuple[str, str], int]
    ) -> dict[tuple[str, str], RecordHistory]:
        """Per key of ``wanted``, the record's latest change-log rows above its base, newest
        first, at most MAX_CONFLICT_HISTORY (walks of ``datafn_changes_by_record``; one
        statement for the batch on PostgreSQL). Read only for writes whose base is below their
        record's seq: the rare path."""
        keys = list(wanted)
        found: dict[tuple[str, str], list[Change]] = {key: [] for key in keys}
        if self.dialect == "postgresql":
            rows = conn.exec_driver_sql(
                HISTORY_SQL_POSTGRESQL,
                {
                    "ns": namespace,
                    "res": [k[0] for k in keys],
                    "ids": [k[1] for k in keys],
                    "bases": [wanted[k] for k in keys],
                },
            ).fetchall()
            for row in rows:  # newest first per key (the lateral subquery's order)
                found[(row[1], row[2])].append(_change_of(row))
        else:
            sql = (
                f"SELECT {_HISTORY_COLUMNS} FROM datafn_changes WHERE namespace = ? "
                "AND resource = ? AND record_id = ? AND seq > ? "
                f"ORDER BY seq DESC LIMIT {MAX_CONFLICT_HISTORY + 1}"
            )
            for key in keys:
                rows = conn.exec_driver_sql(sql, (namespace, *key, wanted[key])).fetchall()
                found[key] = [_change_of(row) for row in rows]
        return {
            key: RecordHistory(
                sorted(changes, key=lambda c: -c.seq)[:MAX_CONFLICT_HISTORY],
                complete=len(changes) <= MAX_CONFLICT_HISTORY,
            )
            for key, changes in found.items()
        }

    def _read_push_sqlite(
        self,
        conn: Connection,
        namespace: str,
        client_id: str,
        mids: list[str],
        keys: Mapping[str, set[str]],
        record_seqs: dict[tuple[str, str], int] | None = None,
    ) -> tuple[dict[str, Any], dict[tuple[str, str], dict[str, Any] | None]]:
        p = self._param
        replays: dict[str, Any] = {}
        for start in range(0, len(mids), 500):
            params: dict[str, Any] = {"ns": namespace, "client": client_id}
            among = self._among("mid", mids[start : start + 500], params)
            rows = conn.exec_driver_sql(
                "SELECT mutation_id, outcome FROM datafn_idempotency "
                f"WHERE namespace = {p('ns')} AND client_id = {p('client')} "
                f"AND mutation_id {among}",
                params,
            )
            replays.update(
                {mid: orjson.loads(outcome) for mid, outcome in rows if outcome is not None}
            )
        return replays, self._load(conn, namespace, keys, record_seqs)

    async def apply_push(
        self, namespace: str, client_id: str, mutations: Sequence[PendingMutation]
    ) -> PushOutcome:
        return await self._run(self._apply_push, namespace, client_id, mutations)

    def _seed(self, namespace: str, data: Mapping[str, Sequence[dict[str, Any]]]) -> dict[str, int]:
        def work(conn: Connection) -> dict[str, int]:
            before = self._lock_counter(conn, namespace)
            keys = {resource: {r["id"] for r in records} for resource, records in data.items()}
            existing = self._load(conn, namespace, keys)
            plan = plan_seed(data, existing=existing, seq=before)
            texts: dict[tuple[str, str], tuple[Any, str]] = {}
            seqs = self._log(conn, namespace, plan.changes, texts)
            self._write_records(
                conn, namespace, dict(plan.writes), seqs, existing=existing, texts=texts
            )
            if plan.last_seq != before:
                self._set_counter(conn, namespace, plan.last_seq)
            return plan.inserted

        return self._write(work)

    async def seed(
        self, namespace: str, data: Mapping[str, Sequence[dict[str, Any]]]
    ) -> dict[str, int]:
        return await self._run(self._seed, namespace, data)

    # -- reads -------------------------------------------------------------------------------

    def _changes_statement(self, count: int) -> Any:
        key = ("changes", count)
        stmt = self._statements.get(key)
        if stmt is None:
            branches = [
                "SELECT * FROM (SELECT seq, resource, record_id, op, data, client_id, conflict "
                f"FROM datafn_changes WHERE namespace = :ns AND resource = :r{i} "
                f"AND seq > :c{i} ORDER BY seq LIMIT :lim) AS q{i}"
                for i in range(count)
            ]
            stmt = (
                "SELECT seq, resource, record_id, op, data, client_id, conflict FROM ("
                + " UNION ALL ".join(branches)
                + ") AS u ORDER BY seq LIMIT :lim"
            )
            if self.dialect == "postgresql":
                stmt = re.sub(r":(\w+)", r"%(\1)s", stmt)
            self._statements[key] = stmt
        return stmt

    def _changes_since(
        self, conn: Connection, namespace: str, cursors: Mapping[str, int], limit: int
    ) -> list[Change]:
        params: dict[str, Any] = {"ns": namespace, "lim": limit}
        for i, (resource, cursor) in enumerate(cursors.items()):
            params[f"r{i}"] = resource
            params[f"c{i}"] = cursor
        rows = conn.exec_driver_sql(self._changes_statement(len(cursors)), params).fetchall()
        loads = orjson.loads
        return [
            Change(
                int(seq),
                resource,
                record_id,
                op,
                None if data is None else loads(data),
                client_id,
                None if conflict is None else loads(conflict),
            )
            for seq, resource, record_id, op, data, client_id, conflict in rows
        ]

    async def changes_since(
        self, namespace: str, cursors: Mapping[str, int], limit: int
    ) -> list[Change]:
        if not cursors or limit <= 0:
            return []
        if self._now_engine is None or limit <= NOW_ROWS:
            return await self._read_now(self._changes_since, namespace, cursors, limit)
        # a pull after a notification finds a few changes: read at most NOW_ROWS on this
        # thread, and only when there are more, the whole answer in a worker thread
        changes = await self._read_now(self._changes_since, namespace, cursors, NOW_ROWS)
        if len(changes) < NOW_ROWS:
            return changes
        return await self._run(self._in_read, self._changes_since, namespace, cursors, limit)

    def _clone_page(
        self,
        namespace: str,
        resource: str,
        after_id: str | None,
        limit: int,
        *,
        with_seq: bool = False,
    ) -> tuple[int, RecordTexts]:
        params: dict[str, Any] = {"ns": namespace, "lim": limit, "res": resource}
        if after_id is not None:
            params["after"] = after_id
        sql = self._page_sql(resource, after=after_id is not None)
        seq = 0
        with self._read() as conn:
            if with_seq:  # read first: a change the page misses is above it
                found = conn.exec_driver_sql(self._latest_sql(), params).scalar()
                seq = int(found or 0)
            # Executed through SQLAlchemy (its error handling and pool invalidation), the rows
            # read as the driver gives them: the texts go into the answer as they are, with no
            # row object and no parse per record.
            result = conn.exec_driver_sql(sql, params)
            try:
                rows = result.cursor.fetchall()
            finally:
                result.close()
        return seq, RecordTexts([row[0] for row in rows], [row[1] for row in rows])

    async def clone_page_at(
        self, namespace: str, resource: str, after_id: str | None, limit: int
    ) -> tuple[int, RecordTexts]:
        return await self._run(
            functools.partial(self._clone_page, with_seq=True), namespace, resource, after_id, limit
        )

    async def clone_page(
        self, namespace: str, resource: str, after_id: str | None, limit: int
    ) -> RecordTexts:
        _, rows = await self._run(self._clone_page, namespace, resource, after_id, limit)
        return rows

    def _records_between(
        self,
        namespace: str,
        resource: str,
        after_id: str | None,
        until_id: str | None,
        limit: int,
    ) -> RecordTexts:
        table = self._records(resource).name
        p = self._param
        params: dict[str, Any] = {"ns": namespace, "lim": limit}
        where = f"namespace = {p('ns')}"
        if after_id is not None:
            where += f" AND id > {p('after')}"
            params["after"] = after_id
        if until_id is not None:
            where += f" AND id <= {p('until')}"
            params["until"] = until_id
        sql = f'SELECT id, data FROM "{table}" WHERE {where} ORDER BY id LIMIT {p("lim")}'
        with self._read() as conn:
            result = conn.exec_driver_sql(sql, params)
            try:
                rows = result.cursor.fetchall()
            finally:
                result.close()
        return RecordTexts([row[0] for row in rows], [row[1] for row in rows])

    async def records_between(
        self,
        namespace: str,
        resource: str,
        after_id: str | None,
        until_id: str | None,
        limit: int,
    ) -> RecordTexts:
        """Reconcile's range read: the clone's query, bounded above too."""
        return await self._run(
            self._records_between, namespace, resource, after_id, until_id, limit
        )

    def _page_sql(self, resource: str, *, after: bool) -> str:
        """A clone page: the records of namespace ``ns`` in id order (after id ``after``), at
        most ``lim``; a walk of the primary key."""
        p = self._param
        where = f"namespace = {p('ns')}" + (f" AND id > {p('after')}" if after else "")
        return (
            f'SELECT id, data FROM "{self._records(resource).name}" WHERE {where} '
            f"ORDER BY id LIMIT {p('lim')}"
        )

    def _latest_sql(self) -> str:
        """The latest seq of resource ``res``: one step backwards on
        ``(namespace, resource, seq)`` (max() may be planned as a scan of every row of the
        resource through another index when the statistics are stale)."""
        p = self._param
        return (
            f"SELECT seq FROM datafn_changes WHERE namespace = {p('ns')} "
            f"AND resource = {p('res')} ORDER BY seq DESC LIMIT 1"
        )

    def _latest_seq(
        self, conn: Connection, namespace: str, resources: Sequence[str]
    ) -> dict[str, int]:
        sql = self._latest_sql()
        out = {}
        for resource in resources:
            found = conn.exec_driver_sql(sql, {"ns": namespace, "res": resource}).scalar()
            out[resource] = int(found or 0)
        return out

    async def latest_seq(self, namespace: str, resources: Sequence[str]) -> dict[str, int]:
        return await self._read_now(self._latest_seq, namespace, resources)

    def _counts(self, namespace: str, resources: Sequence[str]) -> dict[str, int]:
        out = {}
        with self._read() as conn:
            for resource in resources:
                table = self._records(resource)
                out[resource] = int(
                    conn.execute(
                        sa.select(sa.func.count())
                        .select_from(table)
                        .where(table.c.namespace == namespace)
                    ).scalar_one()
                )
        return out

    async def counts(self, namespace: str, resources: Sequence[str]) -> dict[str, int]:
        return await self._run(self._counts, namespace, resources)

    def _namespace_seq(self, conn: Connection, namespace: str) -> int:
        found = conn.exec_driver_sql(
            f"SELECT seq FROM datafn_counters WHERE namespace = {self._param('ns')}",
            {"ns": namespace},
        ).scalar()
        return int(found or 0)

    async def namespace_seq(self, namespace: str) -> int:
        return await self._read_now(self._namespace_seq, namespace)

    # -- retention (docs/server.md, "Retention") ---------------------------------------------

    supports_retention = True

    def _prune_idempotency(self, before: float, limit: int) -> int:
        if self.dialect == "postgresql":
            sql = (
                "DELETE FROM datafn_idempotency WHERE ctid = ANY(ARRAY(SELECT ctid FROM "
                "datafn_idempotency WHERE created_at < %(before)s ORDER BY created_at "
                "LIMIT %(lim)s))"
            )
        else:
            sql = (
                "DELETE FROM datafn_idempotency WHERE rowid IN (SELECT rowid FROM "
                "datafn_idempotency WHERE created_at < :before ORDER BY created_at LIMIT :lim)"
            )
        return self._write(
            lambda conn: int(
                conn.exec_driver_sql(sql, {"before": before, "lim": limit}).rowcount or 0
            )
        )

    async def prune_idempotency(self, before: float, limit: int) -> int:
        return await self._run(self._prune_idempotency, before, limit)

    def _retention_namespaces(self, after: str | None, limit: int) -> list[str]:
        p = self._param
        params: dict[str, Any] = {"lim": limit}
        where = ""
        if after is not None:
            where = f"WHERE namespace > {p('after')} "
            params["after"] = after
        sql = f"SELECT namespace FROM datafn_counters {where}ORDER BY namespace LIMIT {p('lim')}"
        with self._read() as conn:
            return [row[0] for row in conn.exec_driver_sql(sql, params)]

    async def retention_namespaces(self, after: str | None, limit: int) -> list[str]:
        return await self._run(self._retention_namespaces, after, limit)

    def _mark_horizons(self, namespace: str, now: float, ages: Sequence[float]) -> list[int]:
        p = self._param

        def work(conn: Connection) -> list[int]:
            params: dict[str, Any] = {"ns": namespace, "now": now}
            seq = self._namespace_seq(conn, namespace)
            last = conn.exec_driver_sql(
                f"SELECT max(seq) FROM datafn_marks WHERE namespace = {p('ns')}", params
            ).scalar()
            if last is None or int(last) != seq:
                conn.exec_driver_sql(
                    "INSERT INTO datafn_marks (namespace, seq, at) "
                    f"VALUES ({p('ns')}, {p('seq')}, {p('now')}) ON CONFLICT DO NOTHING",
                    {**params, "seq": seq},
                )
            answers = []
            for age in ages:
                found = conn.exec_driver_sql(
                    f"SELECT max(seq) FROM datafn_marks WHERE namespace = {p('ns')} "
                    f"AND at <= {p('before')}",
                    {**params, "before": now - age},
                ).scalar()
                answers.append(int(found or 0))
            # the marks every age has passed, but the newest of them, are no longer needed
            oldest = {**params, "before": now - max(ages, default=0.0)}
            conn.exec_driver_sql(
                f"DELETE FROM datafn_marks WHERE namespace = {p('ns')} AND at <= {p('before')} "
                f"AND seq < (SELECT max(seq) FROM datafn_marks WHERE namespace = {p('ns')} "
                f"AND at <= {p('before')})",
                oldest,
            )
            return answers

        return self._write(work)

    async def mark_horizons(self, namespace: str, now: float, ages: Sequence[float]) -> list[int]:
        return await self._run(self._mark_horizons, namespace, now, ages)

    def _retention_position(self, conn: Connection, namespace: str) -> tuple[int, int]:
        """The walks' positions of the namespace, its row locked until the transaction ends
        (one compaction at a time per namespace, across processes)."""
        p = self._param
        params = {"ns": namespace}
        conn.exec_driver_sql(
            "INSERT INTO datafn_retention (namespace, compacted_to, tombstones_to) "
            f"VALUES ({p('ns')}, 0, 0) ON CONFLICT DO NOTHING",
            params,
        )
        lock = " FOR UPDATE" if self.dialect == "postgresql" else ""
        row = conn.exec_driver_sql(
            "SELECT compacted_to, tombstones_to FROM datafn_retention "
            f"WHERE namespace = {p('ns')}{lock}",
            params,
        ).one()
        return int(row[0]), int(row[1])

    def _set_position(self, conn: Connection, namespace: str, column: str, seq: int) -> None:
        p = self._param
        conn.exec_driver_sql(
            f"UPDATE datafn_retention SET {column} = {p('seq')} WHERE namespace = {p('ns')}",
            {"ns": namespace, "seq": seq},
        )

    def _delete_seqs(self, conn: Connection, namespace: str, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        if self.dialect == "postgresql":
            conn.exec_driver_sql(
                "DELETE FROM datafn_changes WHERE namespace = %(ns)s "
                "AND seq = ANY(%(seqs)s::bigint[])",
                {"ns": namespace, "seqs": list(seqs)},
            )
        else:
            conn.exec_driver_sql(
                "DELETE FROM datafn_changes WHERE namespace = ? AND seq = ?",
                [(namespace, seq) for seq in seqs],
            )

    def _previous_rows(
        self, conn: Connection, namespace: str, keys: Sequence[tuple[str, str]], below: int
    ) -> dict[tuple[str, str], Change]:
        """Per (resource, id) of ``keys``, its latest change-log row below seq ``below``."""
        if self.dialect == "postgresql":
            rows = conn.exec_driver_sql(
                "SELECT c.seq, c.resource, c.record_id, c.op, c.data FROM "
                "unnest(%(res)s::text[], %(ids)s::text[]) AS k(resource, record_id) "
                "CROSS JOIN LATERAL (SELECT seq, resource, record_id, op, data "
                "FROM datafn_changes d WHERE d.namespace = %(ns)s AND d.resource = k.resource "
                "AND d.op <> 'expire' "
                'AND d.record_id = k.record_id COLLATE "C" AND d.seq < %(below)s '
                "ORDER BY d.seq DESC LIMIT 1) AS c",
                {
                    "ns": namespace,
                    "res": [k[0] for k in keys],
                    "ids": [k[1] for k in keys],
                    "below": below,
                },
            ).fetchall()
        else:
            rows = []
            for resource, record_id in keys:
                row = conn.exec_driver_sql(
                    "SELECT seq, resource, record_id, op, data FROM datafn_changes "
                    "WHERE namespace = ? AND resource = ? AND record_id = ? AND seq < ? "
                    "AND op <> 'expire' ORDER BY seq DESC LIMIT 1",
                    (namespace, resource, record_id, below),
                ).first()
                if row is not None:
                    rows.append(row)
        return {(row[1], row[2]): _change_of(row) for row in rows}

    def _compact_changes(self, namespace: str, horizon: int, limit: int) -> CompactionStep:
        p = self._param

        def work(conn: Connection) -> CompactionStep:
            start, _ = self._retention_position(conn, namespace)
            rows = [
                _change_of(row)
                for row in conn.exec_driver_sql(
                    "SELECT seq, resource, record_id, op, data FROM datafn_changes "
                    f"WHERE namespace = {p('ns')} AND seq > {p('start')} "
                    f"AND seq <= {p('horizon')} ORDER BY seq LIMIT {p('lim')}",
                    {"ns": namespace, "start": start, "horizon": horizon, "lim": limit},
                )
            ]
            done = len(rows) < limit
            if not rows:
                self._set_position(conn, namespace, "compacted_to", max(start, horizon))
                return CompactionStep(done=True)
            keys = list(dict.fromkeys((c.resource, c.id) for c in rows))
            previous = self._previous_rows(conn, namespace, keys, rows[0].seq)
            plan = plan_compaction(rows, previous)
            if plan.rewrite:
                conn.exec_driver_sql(
                    f"UPDATE datafn_changes SET op = {p('op')}, data = {p('data')} "
                    f"WHERE namespace = {p('ns')} AND seq = {p('seq')}",
                    [
                        {
                            "op": c.op,
                            "data": orjson.dumps(c.data).decode(),
                            "ns": namespace,
                            "seq": c.seq,
                        }
                        for c in plan.rewrite
                    ],
                )
            self._delete_seqs(conn, namespace, plan.delete)
            position = max(start, horizon) if done else rows[-1].seq
            self._set_position(conn, namespace, "compacted_to", position)
            return CompactionStep(len(rows), len(plan.delete), len(plan.rewrite), 0, done)

        return self._write(work)

    async def compact_changes(self, namespace: str, horizon: int, limit: int) -> CompactionStep:
        return await self._run(self._compact_changes, namespace, horizon, limit)

    def _drop_tombstones(self, namespace: str, horizon: int, limit: int) -> CompactionStep:
        p = self._param

        def work(conn: Connection) -> CompactionStep:
            _, start = self._retention_position(conn, namespace)
            rows = conn.exec_driver_sql(
                "SELECT seq, resource, record_id FROM datafn_changes "
                f"WHERE namespace = {p('ns')} AND seq > {p('start')} AND seq <= {p('horizon')} "
                f"AND op = 'delete' ORDER BY seq LIMIT {p('lim')}",
                {"ns": namespace, "start": start, "horizon": horizon, "lim": limit},
            ).fetchall()
            done = len(rows) < limit
            dropped: list[int] = []
            floors: dict[str, int] = {}
            for seq, resource, record_id in rows:
                later = conn.exec_driver_sql(
                    "SELECT 1 FROM datafn_changes WHERE "
                    f"namespace = {p('ns')} AND resource = {p('res')} AND record_id = {p('id')} "
                    f"AND seq > {p('seq')} AND op <> 'expire' LIMIT 1",
                    {"ns": namespace, "res": resource, "id": record_id, "seq": seq},
                ).first()
                if later is None:
                    dropped.append(int(seq))
                    floors[resource] = max(int(seq), floors.get(resource, 0))
            if floors:  # the floor rises in the transaction that drops the deletes
                before = self._floors(conn, namespace, list(floors))
                highest = "greatest" if self.dialect == "postgresql" else "max"
                conn.exec_driver_sql(
                    "INSERT INTO datafn_floors (namespace, resource, seq) "
                    f"VALUES ({p('ns')}, {p('res')}, {p('seq')}) "
                    "ON CONFLICT (namespace, resource) DO UPDATE "
                    f"SET seq = {highest}(datafn_floors.seq, excluded.seq)",
                    [{"ns": namespace, "res": r, "seq": s} for r, s in floors.items()],
                )
                # one expire row per resource: the highest dropped delete becomes it, the
                # previous one goes
                conn.exec_driver_sql(
                    f"UPDATE datafn_changes SET op = 'expire', record_id = {p('id')}, "
                    f"data = NULL WHERE namespace = {p('ns')} AND seq = {p('seq')}",
                    [{"ns": namespace, "seq": s, "id": EXPIRE_ID} for s in floors.values()],
                )
                old = [s for r, s in before.items() if 0 < s < floors[r]]
                if old:
                    conn.exec_driver_sql(
                        "DELETE FROM datafn_changes WHERE "
                        f"namespace = {p('ns')} AND seq = {p('seq')} AND op = 'expire'",
                        [{"ns": namespace, "seq": s} for s in old],
                    )
            kept = set(floors.values())
            self._delete_seqs(conn, namespace, [s for s in dropped if s not in kept])
            position = max(start, horizon) if done else int(rows[-1][0])
            self._set_position(conn, namespace, "tombstones_to", position)
            return CompactionStep(len(rows), 0, 0, len(dropped), done)

        return self._write(work)

    async def drop_tombstones(self, namespace: str, horizon: int, limit: int) -> CompactionStep:
        return await self._run(self._drop_tombstones, namespace, horizon, limit)

    def _floors(self, conn: Connection, namespace: str, resources: Sequence[str]) -> dict[str, int]:
        found = {
            resource: int(seq)
            for resource, seq in conn.exec_driver_sql(
                f"SELECT resource, seq FROM datafn_floors WHERE namespace = {self._param('ns')}",
                {"ns": namespace},
            )
        }
        return {resource: found.get(resource, 0) for resource in resources}

    async def compaction_floors(self, namespace: str, resources: Sequence[str]) -> dict[str, int]:
        return await self._read_now(self._floors, namespace, resources)


def _change_of(row: Any) -> Change:
    """A change-log row ``(seq, resource, record_id, op, data[, client_id, conflict])``."""
    seq, resource, record_id, op, data, *provenance = row
    client_id, conflict = provenance if provenance else (None, None)
    return Change(
        int(seq),
        resource,
        record_id,
        op,
        None if data is None else orjson.loads(data),
        client_id,
        None if conflict is None else orjson.loads(conflict),
    )


def _sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own handling cannot
    # take the write lock up front).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
    finally:
        cursor.close()


def _sqlite_connect_reader(dbapi_connection: Any, connection_record: Any) -> None:
    # the reader of short reads: statements commit themselves (each read is one statement,
    # one snapshot) and it can never write
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA query_only=1")


def _is_busy(exc: sa.exc.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (any extended code): the database was locked."""
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _sqlite_begin(conn: Connection) -> None:
    # Writes take the database's write lock up front. Reads run without an explicit
    # transaction: every read is one statement, and one statement sees one snapshot.
    if conn.get_execution_options().get("datafn_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
