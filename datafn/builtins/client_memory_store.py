"""Built-in plugin: the in-memory client store (``store = "memory://"``).

Everything lives in dicts of the running process, so it is lost on exit; it is meant for
tests, throwaway scripts and as the reference implementation of the client store contract.
Each method runs without awaiting in between, which makes every method one transaction.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

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
from datafn.schema import Schema

__all__ = ["MemoryClientStore"]


class _IdTable(dict[str, dict[str, Any]]):
    """The records of one resource, keeping its ids sorted on demand (for range reads): the
    sorted list is rebuilt after the set of ids changed."""

    __slots__ = ("_changed", "_sorted")

    def __init__(self) -> None:
        super().__init__()
        self._sorted: list[str] = []
        self._changed = False

    def __setitem__(self, key: str, value: dict[str, Any]) -> None:
        if key not in self:
            self._changed = True
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._changed = True

    def pop(self, key: str, *default: Any) -> Any:
        self._changed = True
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, dict[str, Any]]:
        self._changed = True
        return super().popitem()

    def clear(self) -> None:
        self._changed = True
        super().clear()

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._changed = True
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._changed = True
        super().update(*args, **kwargs)

    def sorted_ids(self) -> list[str]:
        if self._changed or len(self._sorted) != len(self):
            self._sorted = sorted(self)
            self._changed = False
        return self._sorted


class MemoryClientStore(ClientStore):
    """A client store held in memory (``memory://``)."""

    name = "memory"

    def __init__(self, url: str = "memory://", schema: Schema | None = None, config: Any = None):
        self.url = url
        self.schema = schema
        self._records: dict[str, dict[str, dict[str, Any]]] = {}
        self._changelog: dict[int, ChangelogEntry] = {}
        self._seq = itertools.count(1)
        self._states: dict[str, ResourceState] = {}
        self._meta: dict[str, str] = {}
        self._mutation_ids: set[str] = set()
        #: the base of each record with queued writes, kept on its oldest entry (seq → record)
        self._base: dict[int, dict[str, Any] | None] = {}
        self._dead: dict[int, ChangelogEntry] = {}
        self._by_record: dict[tuple[str, str], list[int]] = {}
        self._local = {r.name for r in (schema.resources if schema else ()) if not r.is_remote_only}

    def _table(self, resource: str) -> dict[str, dict[str, Any]]:
        if self.schema is not None and resource not in self._local:
            raise StoreError(f"no local table for resource {resource!r}")
        table = self._records.get(resource)
        if table is None:
            table = self._records[resource] = _IdTable()
        return table

    async def get_meta(self, key: str) -> str | None:
        return self._meta.get(key)

    async def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value

    async def get(self, resource: str, record_id: str) -> dict[str, Any] | None:
        found = self._table(resource).get(record_id)
        return copy.deepcopy(found) if found is not None else None

    async def query(self, resource: str, query: Query) -> list[dict[str, Any]]:
        conditions = query.conditions()
        rows = [r for r in self._table(resource).values() if matches(r, conditions)]
        sort_records(rows, query.sort_keys())
        end = None if query.limit is None else query.offset + query.limit
        return copy.deepcopy(rows[query.offset : end])

    async def count(self, resource: str) -> int:
        return len(self._table(resource))

    async def records_after(
        self, resource: str, after_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        ids = sorted(i for i in self._table(resource) if after_id is None or i > after_id)
        return [copy.deepcopy(self._table(resource)[i]) for i in ids[:limit]]

    async def synced_records_between(
        self, resource: str, after_id: str | None, until_id: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        table = self._table(resource)
        assert isinstance(table, _IdTable)
        ids = table.sorted_ids()
        start = 0 if after_id is None else bisect.bisect_right(ids, after_id)
        end = len(ids) if until_id is None else bisect.bisect_right(ids, until_id)
        picked = ids[start : min(end, start + limit)]
        out: list[dict[str, Any]] = []
        for record_id in picked:  # read-only: the stored dicts, not copies
            if (resource, record_id) not in self._by_record:
                out.append(table[record_id])
                continue
            queued = self._queued_of(resource, record_id)
            if not queued:
                out.append(table[record_id])
            elif self._base.get(queued[0].seq) is not None:
                out.append(self._base[queued[0].seq])  # type: ignore[arg-type]
        return out, (picked[-1] if start + limit < end else None)

    async def unsynced_records(
        self, resource: str, after_id: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        table = self._table(resource)
        ids = sorted(i for i in table if after_id is None or i > after_id)[:limit]
        out: list[dict[str, Any]] = []
        for record_id in ids:
            queued = self._queued_of(resource, record_id)
            if not queued:
                out.append(copy.deepcopy(table[record_id]))
            elif self._base.get(queued[0].seq) is not None:
                out.append(copy.deepcopy(self._base[queued[0].seq]))  # type: ignore[arg-type]
        return out, (ids[-1] if len(ids) == limit else None)

    async def write(self, write: LocalWrite) -> tuple[dict[str, Any] | None, ChangelogEntry]:
        table = self._table(write.resource)
        current = table.get(write.record_id)
        if write.mutation_id in self._mutation_ids:
            raise StoreError(f"mutation id {write.mutation_id!r} is in the changelog already")
        if write.operation == "insert" and current is not None:
            raise Conflict(f"a record with id {write.record_id!r} exists already", path="id")
        after = apply_operation(current, write.operation, write.record_id, write.record)
        state = self._states.get(write.resource)
        entry = ChangelogEntry(
            base_seq=state.cursor if state is not None and state.hydration == "ready" else None,
            seq=next(self._seq),
            resource=write.resource,
            operation=write.operation,
            record_id=write.record_id,
            record=copy.deepcopy(write.record),
            mutation_id=write.mutation_id,
            version=write.version,
            guard=copy.deepcopy(write.guard),
        )
        if not self._queued_of(write.resource, write.record_id):
            # the first queued write of the record: what it replaces is the server's state
            self._base[entry.seq] = copy.deepcopy(current)
        if after is None:
            table.pop(write.record_id, None)
        else:
            table[write.record_id] = after
        self._changelog[entry.seq] = entry
        self._by_record.setdefault((entry.resource, entry.record_id), []).append(entry.seq)
        self._mutation_ids.add(entry.mutation_id)
        return copy.deepcopy(after), entry

    async def changelog(
        self, *, limit: int | None = None, resource: str | None = None
    ) -> list[ChangelogEntry]:
        entries = [
            e for e in self._changelog.values() if resource is None or e.resource == resource
        ]
        return entries[:limit] if limit is not None else entries

    async def pending_count(self) -> int:
        return len(self._changelog)

    # -- bases: the server's last known state of records with queued writes --------------------

    def _queued_of(self, resource: str, record_id: str) -> list[ChangelogEntry]:
        return [self._changelog[seq] for seq in self._by_record.get((resource, record_id), ())]

    def _take(self, seq: int) -> tuple[ChangelogEntry, bool, dict[str, Any] | None]:
        """Remove a queued entry; return it with its record's base (known?, base), the base
        being handed to the record's next oldest queued entry."""
        entry = self._changelog[seq]
        queued = self._queued_of(entry.resource, entry.record_id)
        oldest = queued[0].seq
        known = oldest in self._base
        base = self._base.pop(oldest, None)
        for other in queued:
            if other.seq != oldest:
                self._base.pop(other.seq, None)
        del self._changelog[seq]
        key = (entry.resource, entry.record_id)
        self._by_record[key].remove(seq)
        if not self._by_record[key]:
            del self._by_record[key]
        self._mutation_ids.discard(entry.mutation_id)
        return entry, known, base

    def _set_base(self, resource: str, record_id: str, known: bool, base: Any) -> None:
        queued = self._queued_of(resource, record_id)
        if queued and known:
            self._base[queued[0].seq] = copy.deepcopy(base)

    async def acknowledge(self, seqs: Sequence[int]) -> None:
        for seq in sorted(seqs):
            if seq not in self._changelog:
                continue
            entry, known, base = self._take(seq)
            after = apply_operation(base, entry.operation, entry.record_id, entry.record)
            self._set_base(entry.resource, entry.record_id, known, after)

    def _refuse(self, seqs: Sequence[int]) -> tuple[list[ChangelogEntry], set[str]]:
        removed: list[ChangelogEntry] = []
        unknown: set[str] = set()
        for seq in sorted(seqs):
            if seq not in self._changelog:
                continue
            entry, known, base = self._take(seq)
            removed.append(entry)
            if not known:
                unknown.add(entry.resource)
                continue
            self._set_base(entry.resource, entry.record_id, known, base)
            after = replay(base, self._queued_of(entry.resource, entry.record_id))
            table = self._table(entry.resource)
            if after is None:
                table.pop(entry.record_id, None)
            else:
                table[entry.record_id] = after
        return removed, unknown

    async def reject(self, seqs: Sequence[int]) -> set[str]:
        return self._refuse(seqs)[1]

    async def dead_letter(self, seqs: Sequence[int], error: str) -> set[str]:
        removed, unknown = self._refuse(seqs)
        for entry in removed:
            self._dead[entry.seq] = dataclasses.replace(entry, state="dead", last_error=error)
        return unknown

    async def dead_letters(self) -> list[ChangelogEntry]:
        return [copy.deepcopy(e) for _, e in sorted(self._dead.items())]

    async def discard(self, mutation_id: str) -> tuple[ChangelogEntry | None, set[str]]:
        for seq, entry in list(self._dead.items()):
            if entry.mutation_id == mutation_id:
                del self._dead[seq]
                return entry, set()
        for seq, entry in list(self._changelog.items()):
            if entry.mutation_id == mutation_id:
                _, unknown = self._refuse([seq])
                return entry, unknown
        return None, set()

    async def record_attempt(self, seqs: Sequence[int], error: str | None) -> None:
        for seq in seqs:
            entry = self._changelog.get(seq)
            if entry is not None:
                self._changelog[seq] = dataclasses.replace(
                    entry, attempts=entry.attempts + 1, last_error=error
                )

    def _state(self, resource: str) -> ResourceState:
        return self._states.setdefault(resource, ResourceState(resource))

    async def states(self, resources: Sequence[str]) -> dict[str, ResourceState]:
        return {r: copy.copy(self._state(r)) for r in resources}

    def _rebase(
        self,
        resource: str,
        ids: set[str] | None,
        *,
        server: bool,
        guessed: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        """Apply the queued entries of these records (None: of the resource) on top again.
        With ``server``, the records hold server data now: it becomes their base — except for
        the ``guessed`` ones (a merge applied to a local view whose base was not known)."""
        table = self._table(resource)
        first: set[str] = set()
        for entry in list(self._changelog.values()):
            if entry.resource != resource or (ids is not None and entry.record_id not in ids):
                continue
            if server and entry.record_id not in first:
                first.add(entry.record_id)
                if entry.record_id not in guessed:
                    self._base[entry.seq] = copy.deepcopy(table.get(entry.record_id))
            after = apply_operation(
                table.get(entry.record_id), entry.operation, entry.record_id, entry.record
            )
            if after is None:
                table.pop(entry.record_id, None)
            else:
                table[entry.record_id] = after

    def _server_record(self, resource: str, record_id: str) -> tuple[dict[str, Any] | None, bool]:
        """The record as the server last had it — its base when it has queued writes, else
        the local record — and whether that is known (False: queued writes whose base is not
        known; the local record is the best guess)."""
        queued = self._queued_of(resource, record_id)
        if queued and queued[0].seq in self._base:
            return copy.deepcopy(self._base[queued[0].seq]), True
        return self._table(resource).get(record_id), not queued

    async def apply_pull(self, page: PullPage) -> None:
        for resource in (*page.records, *page.merged, *page.deleted, *page.cursors):
            self._table(resource)  # unknown resources: nothing is applied
        touched: dict[str, set[str]] = {}
        guessed: dict[str, set[str]] = {}
        for resource, records in page.records.items():
            table = self._table(resource)
            for record in records:
                table[record["id"]] = copy.deepcopy(record)
                touched.setdefault(resource, set()).add(record["id"])
        for resource, deltas in page.merged.items():
            table = self._table(resource)
            for delta in deltas:
                base, known = self._server_record(resource, delta["id"])
                if not known:
                    guessed.setdefault(resource, set()).add(delta["id"])
                table[delta["id"]] = apply_operation(base, "merge", delta["id"], delta) or {}
                touched.setdefault(resource, set()).add(delta["id"])
        for resource, ids in page.deleted.items():
            table = self._table(resource)
            for record_id in ids:
                table.pop(record_id, None)
                touched.setdefault(resource, set()).add(record_id)
        for resource, cursor in page.cursors.items():
            state = self._state(resource)
            state.cursor = max(state.cursor, cursor)
        for resource, touched_ids in touched.items():
            self._rebase(resource, touched_ids, server=True, guessed=guessed.get(resource, set()))

    async def apply_clone_page(
        self,
        resource: str,
        records: Sequence[dict[str, Any]],
        *,
        after_id: str | None,
        start_cursor: int | None = None,
        reset: bool = False,
    ) -> None:
        state = self._state(resource)
        table = self._table(resource)
        if start_cursor is not None:
            if reset:
                table.clear()
                for entry in self._changelog.values():  # known again page by page
                    if entry.resource == resource:
                        self._base.pop(entry.seq, None)
            state.hydration = "hydrating"
            state.clone_cursor = start_cursor
        for record in records:
            table[record["id"]] = copy.deepcopy(record)
        state.clone_after_id = after_id
        self._rebase(resource, {r["id"] for r in records}, server=True)

    async def finish_clone(self, resource: str) -> None:
        state = self._state(resource)
        # the clone is the server's state as of clone_cursor: pull on from there, even
        # below the old cursor (a server restored from a backup is behind it)
        if state.clone_cursor is not None:
            state.cursor = state.clone_cursor
        state.hydration = "ready"
        state.clone_after_id = None
        state.clone_cursor = None
        # records with queued writes that no clone page brought are absent on the server
        for entry in self._changelog.values():
            if entry.resource == resource:
                oldest = self._queued_of(resource, entry.record_id)[0].seq
                if oldest == entry.seq and entry.seq not in self._base:
                    self._base[entry.seq] = None
        self._rebase(resource, None, server=False)

    async def reset_hydration(self, resource: str) -> None:
        state = self._state(resource)
        state.hydration = "hydrating"
        state.clone_after_id = None
        state.clone_cursor = None


@hookimpl(trylast=True)
def datafn_register_client_stores(registry: Registry[Any]) -> None:
    registry.add("memory", MemoryClientStore, description="in-process, lost on exit")
