"""The blocking facade: the async client run on a background event loop, for scripts and GUI
programs that are not async.

::

    with datafn.BlockingClient(schema="schema.json", remote="http://127.0.0.1:8787/datafn",
                               store="sqlite:///app.db") as client:
        client.table("todos").insert({"title": "from a script"})
        client.sync.push()

The event loop runs on one thread owned by the facade (an anyio blocking portal); every call
is handed to it and waits for the answer. Event listeners registered with
``client.events.on`` run on that loop thread, so a GUI program hands their work to its own
UI thread (e.g. ``root.after(0, …)`` in tkinter).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, overload

from anyio.from_thread import BlockingPortal, start_blocking_portal

from datafn import events as ev
from datafn.client.client import Client, Table
from datafn.client.reports import (
    CloneReport,
    CloneUpReport,
    PullReport,
    PushReport,
    ReconcileReport,
    SyncStatus,
)
from datafn.client.store import ChangelogEntry
from datafn.events import Event
from datafn.models import ModelT
from datafn.protocol import SeedResult

if TYPE_CHECKING:
    from datafn.client.typed import ModelTable

__all__ = [
    "BlockingClient",
    "BlockingEvents",
    "BlockingModelTable",
    "BlockingSync",
    "BlockingTable",
    "Watch",
]


class BlockingTable:
    """:class:`~datafn.client.client.Table` with blocking methods."""

    def __init__(self, portal: BlockingPortal, table: Table) -> None:
        self._portal = portal
        self._table = table
        self.name = table.name

    def insert(self, record: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
        return self._portal.call(lambda: self._table.insert(record, **kw))

    def merge(self, record: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
        return self._portal.call(lambda: self._table.merge(record, **kw))

    def replace(self, record: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
        return self._portal.call(lambda: self._table.replace(record, **kw))

    def delete(self, record_id: str, **kw: Any) -> None:
        self._portal.call(lambda: self._table.delete(record_id, **kw))

    def get(self, record_id: str) -> dict[str, Any] | None:
        record: dict[str, Any] | None = self._portal.call(self._table.get, record_id)
        return record

    def query(self, filters: Mapping[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
        return self._portal.call(lambda: self._table.query(filters, **kw))

    def count(self) -> int:
        return self._portal.call(self._table.count)

    def watch(
        self,
        callback: Callable[[list[dict[str, Any]]], Any],
        filters: Mapping[str, Any] | None = None,
        *,
        deliver: Callable[[Callable[[], Any]], Any] | None = None,
        **kw: Any,
    ) -> Watch:
        """Call ``callback(records)`` with the result of the query now and each time it
        changes (see :meth:`Table.watch <datafn.client.client.Table.watch>`).

        ``deliver(thunk)`` hands each call to the application's own thread: a GUI passes its
        toolkit's way to run a function on the main thread (``lambda f: root.after(0, f)`` in
        tkinter, a queued signal in Qt). Without it the callback runs on the client's event
        loop thread. ``.close()`` on the returned handle stops watching.
        """
        table = self._table

        async def run() -> None:
            async for records in table.watch(filters, **kw):
                if deliver is None:
                    callback(records)
                else:
                    deliver(functools.partial(callback, records))

        return Watch(self._portal.start_task_soon(run))


class BlockingModelTable(Generic[ModelT]):
    """:class:`~datafn.client.typed.ModelTable` with blocking methods:
    ``client.table(Todo)`` of a :class:`BlockingClient`."""

    def __init__(self, portal: BlockingPortal, table: ModelTable[ModelT]) -> None:
        self._portal = portal
        self._table = table
        self.name = table.name
        self.model = table.model

    def insert(self, record: ModelT | Mapping[str, Any], **kw: Any) -> ModelT:
        return self._portal.call(lambda: self._table.insert(record, **kw))

    def merge(self, record: ModelT | Mapping[str, Any], **kw: Any) -> ModelT:
        return self._portal.call(lambda: self._table.merge(record, **kw))

    def replace(self, record: ModelT | Mapping[str, Any], **kw: Any) -> ModelT:
        return self._portal.call(lambda: self._table.replace(record, **kw))

    def delete(self, record: str | ModelT, **kw: Any) -> None:
        self._portal.call(lambda: self._table.delete(record, **kw))

    def get(self, record_id: str) -> ModelT | None:
        return self._portal.call(self._table.get, record_id)

    def query(self, filters: Mapping[str, Any] | None = None, **kw: Any) -> list[ModelT]:
        return self._portal.call(lambda: self._table.query(filters, **kw))

    def count(self) -> int:
        return self._portal.call(self._table.count)

    def watch(
        self,
        callback: Callable[[list[ModelT]], Any],
        filters: Mapping[str, Any] | None = None,
        *,
        deliver: Callable[[Callable[[], Any]], Any] | None = None,
        **kw: Any,
    ) -> Watch:
        """Call ``callback(instances)`` with the query's result now and each time it changes
        (see :meth:`BlockingTable.watch`)."""
        table = self._table

        async def run() -> None:
            async for records in table.watch(filters, **kw):
                if deliver is None:
                    callback(records)
                else:
                    deliver(functools.partial(callback, records))

        return Watch(self._portal.start_task_soon(run))


class Watch:
    """A running :meth:`BlockingTable.watch`; ``close()`` stops it (also a context manager)."""

    def __init__(self, future: concurrent.futures.Future[None]) -> None:
        self._future = future

    def close(self) -> None:
        """Stop watching (the watch's task is cancelled on the client's loop)."""
        self._future.cancel()
        with contextlib.suppress(concurrent.futures.CancelledError, Exception):
            self._future.result(timeout=10)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class BlockingSync:
    """``client.sync`` with blocking methods."""

    def __init__(self, portal: BlockingPortal, client: Client) -> None:
        self._portal = portal
        self._client = client

    def _call(self, name: str, *args: Any) -> Any:
        return self._portal.call(lambda: getattr(self._client.sync, name)(*args))

    def start(self) -> None:
        self._call("start")

    def stop(self) -> None:
        self._call("stop")

    def seed(self, data: Mapping[str, Sequence[dict[str, Any]]]) -> SeedResult:
        result: SeedResult = self._portal.call(self._client.sync.seed, data)
        return result

    def clone(self, resources: Sequence[str] | None = None) -> CloneReport:
        return self._portal.call(self._client.sync.clone, resources)

    def pull(self, resources: Sequence[str] | None = None) -> PullReport:
        return self._portal.call(self._client.sync.pull, resources)

    def push(self) -> PushReport:
        return self._portal.call(self._client.sync.push)

    def clone_up(self, resources: Sequence[str] | None = None) -> CloneUpReport:
        return self._portal.call(self._client.sync.clone_up, resources)

    def reconcile(self, resources: Sequence[str] | None = None) -> ReconcileReport:
        return self._portal.call(self._client.sync.reconcile, resources)

    def sync_all(self) -> None:
        self._call("sync_all")

    def wait_idle(self) -> None:
        self._call("wait_idle")

    def pending(self) -> list[ChangelogEntry]:
        entries: list[ChangelogEntry] = self._call("pending")
        return entries

    def discard(self, mutation_id: str) -> ChangelogEntry:
        entry: ChangelogEntry = self._call("discard", mutation_id)
        return entry

    def status(self) -> SyncStatus:
        return self._call("status")  # type: ignore[no-any-return]

    def notify(self, signal: str) -> None:
        self._call("notify", signal)


class BlockingEvents:
    """``client.events``: ``on`` / ``off`` / ``once``; listeners run on the loop thread."""

    def __init__(self, portal: BlockingPortal, client: Client) -> None:
        self._portal = portal
        self._client = client

    @overload
    def on(
        self, name: Literal["sync_started"], listener: Callable[[ev.SyncStartedEvent], Any]
    ) -> Callable[..., Any]: ...

    @overload
    def on(
        self, name: Literal["sync_applied"], listener: Callable[[ev.SyncAppliedEvent], Any]
    ) -> Callable[..., Any]: ...

    @overload
    def on(
        self, name: Literal["sync_failed"], listener: Callable[[ev.SyncFailedEvent], Any]
    ) -> Callable[..., Any]: ...

    @overload
    def on(
        self, name: Literal["sync_retry"], listener: Callable[[ev.SyncRetryEvent], Any]
    ) -> Callable[..., Any]: ...

    @overload
    def on(
        self,
        name: Literal["connectivity_changed"],
        listener: Callable[[ev.ConnectivityChangedEvent], Any],
    ) -> Callable[..., Any]: ...

    @overload
    def on(
        self, name: Literal["ws_connected"], listener: Callable[[ev.WsConnectedEvent], Any]
    ) -> Callable[..., Any]: ...

    @overload
    def on(
        self, name: Literal["ws_disconnected"], listener: Callable[[ev.WsDisconnectedEvent], Any]
    ) -> Callable[..., Any]: ...

    @overload
    def on(
        self, name: Literal["mutation_applied"], listener: Callable[[ev.MutationAppliedEvent], Any]
    ) -> Callable[..., Any]: ...

    @overload
    def on(
        self,
        name: Literal["mutation_rejected"],
        listener: Callable[[ev.MutationRejectedEvent], Any],
    ) -> Callable[..., Any]: ...

    @overload
    def on(
        self,
        name: Literal["mutation_discarded"],
        listener: Callable[[ev.MutationDiscardedEvent], Any],
    ) -> Callable[..., Any]: ...

    @overload
    def on(
        self, name: Literal["records_changed"], listener: Callable[[ev.RecordsChangedEvent], Any]
    ) -> Callable[..., Any]: ...

    @overload
    def on(
        self, name: Literal["plugin_error"], listener: Callable[[ev.PluginErrorEvent], Any]
    ) -> Callable[..., Any]: ...

    @overload
    def on(self, name: str, listener: Callable[[Event], Any]) -> Callable[..., Any]: ...

    def on(self, name: str, listener: Callable[[Any], Any]) -> Callable[..., Any]:
        """Call ``listener(event)`` for every ``name`` event, on the loop thread (typed per
        event name as in :meth:`EventBus.on <datafn.events.EventBus.on>`)."""
        self._portal.call(lambda: _sync(self._client.events.on, name, listener))
        return listener

    @overload
    def once(
        self, name: Literal["sync_started"], listener: Callable[[ev.SyncStartedEvent], Any]
    ) -> Callable[..., Any]: ...

    @overload
    def once(
        self, name: Literal["sync_applied"], listener: Callable[[ev.SyncAppliedEvent], Any]
    ) -> Callable[..., Any]: ...

    @overload
    def once(
        self, name: Literal["sync_failed"], listener: Callable[[ev.SyncFailedEvent], Any]
    ) -> Callable[..., Any]: ...

    @overload
    def once(
        self, name: Literal["sync_retry"], listener: Callable[[ev.SyncRetryEvent], Any]
    ) -> Callable[..., Any]: ...

    @overload
    def once(
        self,
        name: Literal["connectivity_changed"],
        listener: Callable[[ev.ConnectivityChangedEvent], Any],
    ) -> Callable[..., Any]: ...

    @overload
    def once(
        self, name: Literal["ws_connected"], listener: Callable[[ev.WsConnectedEvent], Any]
    ) -> Callable[..., Any]: ...

    @overload
    def once(
        self, name: Literal["ws_disconnected"], listener: Callable[[ev.WsDisconnectedEvent], Any]
    ) -> Callable[..., Any]: ...

    @overload
    def once(
        self, name: Literal["mutation_applied"], listener: Callable[[ev.MutationAppliedEvent], Any]
    ) -> Callable[..., Any]: ...

    @overload
    def once(
        self,
        name: Literal["mutation_rejected"],
        listener: Callable[[ev.MutationRejectedEvent], Any],
    ) -> Callable[..., Any]: ...

    @overload
    def once(
        self,
        name: Literal["mutation_discarded"],
        listener: Callable[[ev.MutationDiscardedEvent], Any],
    ) -> Callable[..., Any]: ...

    @overload
    def once(
        self, name: Literal["records_changed"], listener: Callable[[ev.RecordsChangedEvent], Any]
    ) -> Callable[..., Any]: ...

    @overload
    def once(
        self, name: Literal["plugin_error"], listener: Callable[[ev.PluginErrorEvent], Any]
    ) -> Callable[..., Any]: ...

    @overload
    def once(self, name: str, listener: Callable[[Event], Any]) -> Callable[..., Any]: ...

    def once(self, name: str, listener: Callable[[Any], Any]) -> Callable[..., Any]:
        self._portal.call(lambda: _sync(self._client.events.once, name, listener))
        return listener

    def off(self, name: str, listener: Callable[[Any], Any] | None = None) -> None:
        self._portal.call(lambda: _sync(self._client.events.off, name, listener))


async def _sync(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)


class BlockingClient:
    """A :class:`~datafn.client.client.Client` for code that is not async; same arguments.

    Use it as a context manager, or call :meth:`open` and :meth:`close`.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._client = Client(**kwargs)
        self._stack: contextlib.ExitStack | None = None
        self._portal: BlockingPortal | None = None

    def open(self) -> BlockingClient:
        stack = contextlib.ExitStack()
        try:
            portal = stack.enter_context(start_blocking_portal())
            stack.enter_context(portal.wrap_async_context_manager(self._client))
        except BaseException:
            stack.close()
            raise
        self._stack, self._portal = stack, portal
        self.sync = BlockingSync(portal, self._client)
        self.events = BlockingEvents(portal, self._client)
        return self

    def close(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def __enter__(self) -> BlockingClient:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def client_id(self) -> str:
        return self._client.client_id

    @property
    def portal(self) -> BlockingPortal:
        """The portal running the event loop (``portal.call(async_fn, …)``)."""
        if self._portal is None:
            raise RuntimeError("the client is not open")
        return self._portal

    @overload
    def table(self, name: str) -> BlockingTable: ...

    @overload
    def table(self, name: type[ModelT]) -> BlockingModelTable[ModelT]: ...

    def table(self, name: str | type[ModelT]) -> BlockingTable | BlockingModelTable[ModelT]:
        """The local table of resource ``name``, or the typed table of a pydantic / SQLModel
        class (see :meth:`Client.table <datafn.client.client.Client.table>`)."""
        if isinstance(name, type):
            return BlockingModelTable(self.portal, self._client.table(name))
        return BlockingTable(self.portal, self._client.table(name))
