"""The SQL server store: SQLite (default) and PostgreSQL through SQLAlchemy Core.

Tables (every row carries its namespace):

- ``datafn_records_<resource>``: one table per resource, ``(namespace, id)`` → JSON text;
- ``datafn_changes``: the change log, primary key ``(namespace, seq)``, also indexed by
  ``(namespace, resource, seq)`` for pulls;
- ``datafn_idempotency``: ``(namespace, client_id, mutation_id)`` → the mutation's outcome;
- ``datafn_counters``: the seq counter of each namespace;
- ``datafn_meta``: the store's format version.

Tables and columns that are missing are created on open (a new resource gets its table; a
newer store version adds its columns); nothing is ever dropped.

A write (push or seed) runs in one transaction that first takes the namespace's seq lock and
keeps it until it commits: ``BEGIN IMMEDIATE`` on SQLite (one writer per database, across
processes), ``SELECT … FOR UPDATE`` of the counter row on PostgreSQL (one writer per
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
from datafn.server.mutations import plan_push, plan_seed, touched_keys
from datafn.server.store import Change, PendingMutation, PushOutcome, RecordTexts, ServerStore

__all__ = ["FORMAT_VERSION", "SqlServerStore", "records_table_name"]

#: Version of the table layout, kept in datafn_meta.
FORMAT_VERSION = 1

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
        self.meta = sa.Table(
            "datafn_meta",
            self.metadata,
            sa.Column("key", sa.Text, primary_key=True),
            sa.Column("value", sa.Text, nullable=False),
        )
        self.counters = sa.Table(
            "datafn_counters",
            self.metadata,
            sa.Column("namespace", sa.Text, primary_key=True),
            sa.Column("seq", sa.BigInteger, nullable=False),
        )
        self.changes = sa.Table(
            "datafn_changes",
            self.metadata,
            sa.Column("namespace", sa.Text, primary_key=True),
            sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("resource", sa.Text, nullable=False),
            sa.Column("record_id", id_type, nullable=False),
            sa.Column("op", sa.Text, nullable=False),
            sa.Column("data", sa.Text, nullable=True),
            sa.Index("datafn_changes_by_resource", "namespace", "resource", "seq"),
        )
        self.idempotency = sa.Table(
            "datafn_idempotency",
            self.metadata,
            sa.Column("namespace", sa.Text, primary_key=True),
            sa.Column("client_id", sa.Text, primary_key=True),
            sa.Column("mutation_id", sa.Text, primary_key=True),
            sa.Column("outcome", sa.Text, nullable=False),
            sa.Column("created_at", sa.Float, nullable=True),
        )
        self.records: dict[str, sa.Table] = {}
        for resource in schema.resources:
            self.records[resource.name] = sa.Table(
                records_table_name(resource.name),
                self.metadata,
                sa.Column("namespace", sa.Text, primary_key=True),
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
        return self.engine.connect()

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
            conn.exec_driver_sql(
                "INSERT INTO datafn_counters (namespace, seq) VALUES (%(ns)s, 0) "
                "ON CONFLICT (namespace) DO NOTHING",
                {"ns": namespace},
            )
            row = conn.exec_driver_sql(
                "SELECT seq FROM datafn_counters WHERE namespace = %(ns)s FOR UPDATE",
                {"ns": namespace},
            ).scalar_one()
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
        self, conn: Connection, namespace: str, keys: Mapping[str, set[str]]
    ) -> dict[tuple[str, str], dict[str, Any] | None]:
        existing: dict[tuple[str, str], dict[str, Any] | None] = {}
        for resource, ids in keys.items():
            table = self._records(resource).name
            id_list = list(ids)
            for start in range(0, len(id_list), 500):
                params: dict[str, Any] = {"ns": namespace}
                among = self._among("id", id_list[start : start + 500], params)
                rows = conn.exec_driver_sql(
                    f'SELECT id, data FROM "{table}" '
                    f"WHERE namespace = {self._param('ns')} AND id {among}",
                    params,
                )
                for record_id, data in rows:
                    existing[(resource, record_id)] = orjson.loads(data)
        return existing

    # Bulk writes are one statement per table: executemany of a prepared statement on SQLite,
    # arrays through unnest() on PostgreSQL (one round trip instead of one per row).

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
        if self.dialect == "postgresql":
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

    def _write_records(
        self,
        conn: Connection,
        namespace: str,
        writes: Mapping[tuple[str, str], dict[str, Any] | None],
        seqs: Mapping[tuple[str, str], int],
    ) -> None:
        upserts: dict[str, list[tuple[Any, ...]]] = {}
        deletes: dict[str, list[str]] = {}
        dumps = orjson.dumps
        for (resource, record_id), record in writes.items():
            if record is None:
                deletes.setdefault(resource, []).append(record_id)
            else:
                upserts.setdefault(resource, []).append(
                    (record_id, dumps(record).decode(), seqs[(resource, record_id)])
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
            if self.dialect == "postgresql":
                conn.exec_driver_sql(
                    f'DELETE FROM "{table}" WHERE namespace = %(ns)s AND id = ANY(%(ids)s::text[])',
                    {"ns": namespace, "ids": ids},
                )
            else:
                conn.exec_driver_sql(
                    f'DELETE FROM "{table}" WHERE namespace = ? AND id = ?',
                    [(namespace, record_id) for record_id in ids],
                )

    def _log(
        self, conn: Connection, namespace: str, changes: Sequence[Change]
    ) -> dict[tuple[str, str], int]:
        seqs: dict[tuple[str, str], int] = {}
        rows = []
        dumps = orjson.dumps
        for change in changes:
            seqs[(change.resource, change.id)] = change.seq
            data = None if change.data is None else dumps(change.data).decode()
            rows.append((change.seq, change.resource, change.id, change.op, data))
        self._bulk_insert(
            conn,
            "datafn_changes",
            ("seq", "resource", "record_id", "op", "data"),
            ("bigint", "text", "text", "text", "text"),
            namespace,
            rows,
        )
        return seqs

    def _apply_push(
        self, namespace: str, client_id: str, mutations: Sequence[PendingMutation]
    ) -> PushOutcome:
        p = self._param

        def work(conn: Connection) -> PushOutcome:
            before = self._lock_counter(conn, namespace)
            mids = list({m.mutation_id for m in mutations})
            replays: dict[str, Any] = {}
            for start in range(0, len(mids), 500):
                params: dict[str, Any] = {"ns": namespace, "client": client_id}
                if self.dialect == "postgresql":
                    params["mids"] = mids[start : start + 500]
                    sql = REPLAYS_SQL_POSTGRESQL
                else:
                    among = self._among("mid", mids[start : start + 500], params)
                    sql = (
                        "SELECT mutation_id, outcome FROM datafn_idempotency "
                        f"WHERE namespace = {p('ns')} AND client_id = {p('client')} "
                        f"AND mutation_id {among}"
                    )
                rows = conn.exec_driver_sql(sql, params)
                replays.update(
                    {mid: orjson.loads(outcome) for mid, outcome in rows if outcome is not None}
                )
            existing = self._load(conn, namespace, touched_keys(mutations))
            plan = plan_push(self.schema, mutations, existing=existing, replays=replays, seq=before)
            seqs = self._log(conn, namespace, plan.changes)
            self._write_records(conn, namespace, plan.writes, seqs)
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
            return PushOutcome(plan.results, before, plan.last_seq, plan.cursors)

        return self._write(work)

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
            seqs = self._log(conn, namespace, plan.changes)
            self._write_records(conn, namespace, dict(plan.writes), seqs)
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
                "SELECT * FROM (SELECT seq, resource, record_id, op, data FROM datafn_changes "
                f"WHERE namespace = :ns AND resource = :r{i} AND seq > :c{i} "
                f"ORDER BY seq LIMIT :lim) AS q{i}"
                for i in range(count)
            ]
            stmt = (
                "SELECT seq, resource, record_id, op, data FROM ("
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
            Change(int(seq), resource, record_id, op, None if data is None else loads(data))
            for seq, resource, record_id, op, data in rows
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
        table = self._records(resource).name
        p = self._param
        params: dict[str, Any] = {"ns": namespace, "lim": limit, "res": resource}
        where = f"namespace = {p('ns')}"
        if after_id is not None:
            where += f" AND id > {p('after')}"
            params["after"] = after_id
        sql = f'SELECT id, data FROM "{table}" WHERE {where} ORDER BY id LIMIT {p("lim")}'
        seq = 0
        with self._read() as conn:
            if with_seq:  # read first: a change the page misses is above it
                found = conn.exec_driver_sql(
                    f'SELECT max(seq) FROM "{self.tables.changes.name}" '
                    f"WHERE namespace = {p('ns')} AND resource = {p('res')}",
                    params,
                ).scalar()
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

    def _latest_seq(
        self, conn: Connection, namespace: str, resources: Sequence[str]
    ) -> dict[str, int]:
        p = self._param
        sql = (
            "SELECT max(seq) FROM datafn_changes "
            f"WHERE namespace = {p('ns')} AND resource = {p('res')}"
        )
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
