"""``datafn.Client``: the local store, its tables, the sync engine and the event bus.

::

    async with datafn.Client(schema="schema.json", remote="http://127.0.0.1:8787/datafn",
                             store="sqlite:///app.db") as client:
        todo = await client.table("todos").insert({"title": "write docs"})
        await client.sync.start()

Every argument may instead come from ``[tool.datafn]`` / ``DATAFN_*`` (see :mod:`datafn.config`);
arguments win. The store is chosen by the scheme of its URL from the ``client store``
registry, the transport by ``sync.transport`` from the ``transport`` registry.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import anyio
import anyio.abc
import anyio.lowlevel

from datafn.client.engine import Signal, SyncEngine
from datafn.client.store import ClientStore, LocalWrite, Query
from datafn.client.transport import Transport
from datafn.config import SyncSettings
from datafn.errors import ConfigError, ValidationFailed
from datafn.events import Event, EventBus
from datafn.models import ModelT, is_import_path, load_schema_and_models, resource_name
from datafn.registry import backend_name
from datafn.runtime import Runtime
from datafn.schema import ResourceSpec, Schema, check_json_value

if TYPE_CHECKING:
    from pydantic import BaseModel

    from datafn.client.typed import ModelTable

__all__ = ["Client", "Table"]

_SYNC_KEYS = frozenset(SyncSettings.model_fields)


class Table:
    """The records of one resource in the local store: ``client.table("todos")``.

    Writes are validated against the schema (errors carry the field path, e.g. ``$.title``),
    applied to the local store together with their changelog entry in one transaction, and
    announced with ``mutation_applied``. ``guard`` is the optimistic-concurrency condition
    sent to the server as the mutation's ``if``: field values the server's copy must have.
    """

    def __init__(self, client: Client, spec: ResourceSpec) -> None:
        self._client = client
        self.spec = spec
        self.name = spec.name

    def __repr__(self) -> str:
        return f"<Table {self.name}>"

    async def insert(
        self, record: Mapping[str, Any], *, guard: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Insert a new record (an id ``"<idPrefix>:<uuid>"`` is generated when absent)."""
        body = dict(record)
        body.setdefault("id", self.spec.new_id())
        checked = self.spec.validate_record(body)
        return _written(await self._write("insert", checked["id"], checked, guard))

    async def replace(
        self, record: Mapping[str, Any], *, guard: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Write the full record (created when missing)."""
        body = dict(record)
        body.setdefault("id", self.spec.new_id())
        checked = self.spec.validate_record(body)
        return _written(await self._write("replace", checked["id"], checked, guard))

    async def merge(
        self, record: Mapping[str, Any], *, guard: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Update some fields of the record ``record["id"]`` (created when missing)."""
        if "id" not in record:
            raise ValidationFailed(
                "a merge needs the record's id", code="DFQL_INVALID", path="$.id"
            )
        delta = self.spec.validate_record(dict(record), partial=True)
        current = await self._client.store.get(self.name, delta["id"]) or {"id": delta["id"]}
        # fields the server added since (a compatible schema change) are kept as they came
        known = {k: v for k, v in current.items() if k == "id" or self.spec.field(k) is not None}
        self.spec.validate_record({**known, **delta})
        return _written(await self._write("merge", delta["id"], delta, guard))

    async def delete(self, record_id: str, *, guard: Mapping[str, Any] | None = None) -> None:
        """Delete the record (deleting a missing record is not an error)."""
        self.spec.validate_record({"id": record_id}, partial=True)
        await self._write("delete", record_id, None, guard)

    async def get(self, record_id: str) -> dict[str, Any] | None:
        """The record, or None."""
        return await self._client.store.get(self.name, record_id)

    async def query(
        self,
        filters: Mapping[str, Any] | None = None,
        *,
        sort: str | Sequence[str] = (),
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Records matching ``filters`` (``{"done": False, "priority": {"gte": 2}}``), ordered
        by ``sort`` (``"-priority"`` for descending; default by id), paged by limit/offset."""
        self._check_query(filters, sort, limit, offset)
        keys = (sort,) if isinstance(sort, str) else tuple(sort)
        query = Query(filters=dict(filters or {}), sort=keys, limit=limit, offset=offset)
        return await self._client.store.query(self.name, query)

    async def count(self) -> int:
        """How many records the local store holds."""
        return await self._client.store.count(self.name)

    async def watch(
        self,
        filters: Mapping[str, Any] | None = None,
        *,
        sort: str | Sequence[str] = (),
        limit: int | None = None,
        offset: int = 0,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The result of :meth:`query` now, and again each time a change makes it differ:
        local writes, pulls, clones, reconciles, refused and discarded writes.

        ::

            async for todos in client.table("todos").watch({"done": False}, sort="title"):
                show(todos)

        Changes are coalesced: however many arrive while the consumer is busy (a pulled page
        of a thousand records, say), one new result follows. Only this resource's
        ``records_changed`` events wake it; leaving the loop unsubscribes.
        """
        self._check_query(filters, sort, limit, offset)
        changed = Signal()
        name = self.name

        def on_change(event: Event) -> None:
            if event.context.resource == name:
                changed.set()

        events = self._client.events
        events.on("records_changed", on_change)
        try:
            result = await self.query(filters, sort=sort, limit=limit, offset=offset)
            yield result
            while True:
                await changed.wait()
                await anyio.lowlevel.checkpoint()  # let the rest of a burst land first
                latest = await self.query(filters, sort=sort, limit=limit, offset=offset)
                if latest != result:
                    result = latest
                    yield result
        finally:
            events.off("records_changed", on_change)

    def _check_query(
        self,
        filters: Mapping[str, Any] | None,
        sort: str | Sequence[str],
        limit: int | None,
        offset: int,
    ) -> None:
        keys = (sort,) if isinstance(sort, str) else tuple(sort)
        for name in [*(filters or {}), *(k.lstrip("-") for k in keys)]:
            if name != "id" and self.spec.field(name) is None:
                raise ValidationFailed(
                    f"unknown field {name!r} of resource {self.name!r}",
                    code="DFQL_UNKNOWN_FIELD",
                    path=f"filters.{name}" if name in (filters or {}) else "sort",
                )
        if (limit is not None and limit < 0) or offset < 0:
            raise ValidationFailed("limit and offset must be >= 0", code="DFQL_INVALID", path="$")
        Query(filters=dict(filters or {}), sort=keys, limit=limit, offset=offset).conditions()

    async def _write(
        self,
        operation: str,
        record_id: str,
        record: dict[str, Any] | None,
        guard: Mapping[str, Any] | None,
    ) -> dict[str, Any] | None:
        if guard is not None:
            check_json_value(dict(guard), path="if")
        write = LocalWrite(
            resource=self.name,
            operation=operation,  # type: ignore[arg-type]
            record_id=record_id,
            record=record,
            mutation_id=str(uuid.uuid4()),
            version=self.spec.version,
            guard=dict(guard) if guard is not None else None,
        )
        client = self._client
        after, _entry = await client.store.write(write)
        await client.events.emit(
            "mutation_applied",
            resource=self.name,
            record_id=record_id,
            operation=operation,
            mutation_id=write.mutation_id,
        )
        ids = [record_id]
        await client.sync.records_changed(
            self.name,
            origin="local",
            inserted=ids if operation == "insert" else (),
            updated=ids if operation in ("merge", "replace") else (),
            deleted=ids if operation == "delete" else (),
        )
        client.sync.notify_write()
        return after


def _only(group: BaseExceptionGroup, raised: BaseException) -> bool:
    """Whether ``group`` holds nothing but ``raised`` (and cancellations)."""
    for leaf in _leaves(group):
        if leaf is not raised and not isinstance(leaf, anyio.get_cancelled_exc_class()):
            return False
    return True


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for item in group.exceptions:
        out += _leaves(item) if isinstance(item, BaseExceptionGroup) else [item]
    return out


def _written(record: dict[str, Any] | None) -> dict[str, Any]:
    assert record is not None  # only a delete leaves no record
    return record


class Client:
    """The DataFn client: an async context manager.

    :param schema: a :class:`~datafn.schema.Schema`, a dict, a ``.json``/``.toml`` path,
        pydantic / SQLModel classes (``[Todo, Note]``, see ``docs/models.md``), an import path
        (``"myapp.models:Todo,Note"``) or a list mixing those (default: the ``schema``
        setting).
    :param remote: the server's base URL (default: ``sync.remote``); without one the client
        works purely locally and sync operations raise ConfigError.
    :param store: the client store URL (``sqlite:///app.db``, ``memory://``; default:
        ``store``).
    :param client_id: default: the ``client-id`` setting, else an id generated once and kept in
        the store.
    :param transport: a transport name, or a ready :class:`~datafn.client.transport.Transport`
        (tests pass one built on ``httpx.MockTransport``).
    :param plugins: plugin objects to register besides the installed ones.
    :param sync: more ``[tool.datafn.sync]`` settings, snake_case (``{"push_interval": 5}``);
        any sync setting may also be passed as a keyword (``push_batch_size=50``).
    """

    def __init__(
        self,
        *,
        schema: Schema
        | Mapping[str, Any]
        | str
        | Path
        | type[BaseModel]
        | Sequence[Any]
        | None = None,
        remote: str | None = None,
        store: str | None = None,
        client_id: str | None = None,
        transport: str | Transport | None = None,
        plugins: Sequence[object] = (),
        pyproject: Path | str | None = None,
        use_env: bool = True,
        sync: Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        sync_settings = dict(sync or {})
        for key in list(settings):
            if key in _SYNC_KEYS:
                sync_settings[key] = settings.pop(key)
        if remote is not None:
            sync_settings["remote"] = remote
        if isinstance(transport, str):
            sync_settings["transport"] = transport
        self._schema_arg = schema
        self._transport_arg = transport if isinstance(transport, Transport) else None
        self._boot = {
            "plugins": plugins,
            "pyproject": pyproject,
            "use_env": use_env,
            "store": store,
            "client_id": client_id,
            **({"sync": sync_settings} if sync_settings else {}),
            **settings,
        }
        self._stack: contextlib.AsyncExitStack | None = None
        self._tables: dict[str, Table] = {}
        #: the pydantic / SQLModel classes the schema came from, by resource name
        self.models: dict[str, type[BaseModel]] = {}

    async def __aenter__(self) -> Client:
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            await self._open(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        raised = exc_info[1] if len(exc_info) > 1 else None
        try:
            await stack.__aexit__(*exc_info)
        except BaseExceptionGroup as group:
            # the task group that runs the engine's background tasks wraps what the block
            # raised: it comes out as itself (the background tasks report their own failures
            # through status and events, never through the block)
            if raised is not None and _only(group, raised):
                return  # not suppressed: Python re-raises the block's own exception
            raise

    async def aclose(self) -> None:
        await self.__aexit__(None, None, None)

    async def _open(self, stack: contextlib.AsyncExitStack) -> None:
        self.runtime = Runtime.boot(**self._boot)
        config = self.runtime.config
        self.schema = self._load_schema()
        url = config.settings.store
        factory = self.runtime.plugins.registry("client store").get(backend_name(url))
        self.store: ClientStore = factory(url, self.schema, config)
        await self.store.open()
        stack.push_async_callback(self.store.aclose)
        client_id = config.settings.client_id or await self.store.get_meta("client_id")
        if client_id is None:
            client_id = f"client:{uuid.uuid4()}"
            await self.store.set_meta("client_id", client_id)
        self.client_id: str = client_id
        self.events = EventBus(hooks=self.runtime.plugins.caller)
        transport = self._transport_arg
        if transport is None and config.sync.remote:
            registry = self.runtime.plugins.registry("transport")
            transport = registry.get(config.sync.transport)(config.sync.remote, config)
        if transport is not None:
            stack.push_async_callback(transport.aclose)
        self.transport = transport
        self.sync = SyncEngine(
            runtime=self.runtime,
            schema=self.schema,
            store=self.store,
            transport=transport,
            events=self.events,
            client_id=client_id,
        )
        task_group = anyio.create_task_group()
        await stack.enter_async_context(task_group)
        stack.push_async_callback(self.sync.stop)
        self.sync._attach(task_group)

    def _load_schema(self) -> Schema:
        source = self._schema_arg
        if source is None:
            source = self.runtime.config.schema_source
            if (
                isinstance(source, str | Path)
                and not is_import_path(source)
                and not Path(source).is_absolute()
            ):
                source = self.runtime.base_dir / source
        if source is None:
            raise ConfigError(
                "no schema given; pass schema=… or set `schema` in [tool.datafn]",
                key="tool.datafn.schema",
            )
        schema, self.models = load_schema_and_models(source, base_dir=self.runtime.base_dir)
        return schema

    @overload
    def table(self, name: str) -> Table: ...

    @overload
    def table(self, name: type[ModelT]) -> ModelTable[ModelT]: ...

    def table(self, name: str | type[ModelT]) -> Table | ModelTable[ModelT]:
        """The local table of resource ``name``; given a pydantic / SQLModel class, the
        typed table of the resource it maps to (records come back as instances)."""
        if isinstance(name, type):
            from datafn.client.typed import ModelTable

            return ModelTable(self._table(resource_name(name)), name)
        return self._table(name)

    def _table(self, name: str) -> Table:
        table = self._tables.get(name)
        if table is None:
            if self._stack is None:
                raise RuntimeError("use the client inside `async with Client(...)`")
            spec = self.schema.resource(name)
            if spec.is_remote_only:
                raise ValidationFailed(
                    f"resource {name!r} is remote-only and has no local table",
                    code="DFQL_INVALID",
                    path="$",
                )
            table = self._tables[name] = Table(self, spec)
        return table
