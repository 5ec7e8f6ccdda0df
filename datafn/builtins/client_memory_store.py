"""Built-in plugin: the in-memory client store (``store = "memory://"``).

Everything lives in dicts of the running process, so it is lost on exit; it is meant for
tests, throwaway scripts and as the reference implementation of the client store contract.
Each method runs without awaiting in between, which makes every method one transaction.
"""

from __future__ import annotations

import copy
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
    sort_records,
)
from datafn.errors import Conflict, StoreError
from datafn.plugin import hookimpl
from datafn.registry import Registry
from datafn.schema import Schema

__all__ = ["MemoryClientStore"]


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
        self._local = {r.name for r in (schema.resources if schema else ()) if not r.is_remote_only}

    def _table(self, resource: str) -> dict[str, dict[str, Any]]:
        if self.schema is not None and resource not in self._local:
            raise StoreError(f"no local table for resource {resource!r}")
        return self._records.setdefault(resource, {})

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

    async def write(self, write: LocalWrite) -> tuple[dict[str, Any] | None, ChangelogEntry]:
        table = self._table(write.resource)
        current = table.get(write.record_id)
        if write.mutation_id in self._mutation_ids:
            raise StoreError(f"mutation id {write.mutation_id!r} is in the changelog already")
        if write.operation == "insert" and current is not None:
            raise Conflict(f"a record with id {write.record_id!r} exists already", path="id")
        after = apply_operation(current, write.operation, write.record_id, write.record)
        entry = ChangelogEntry(
            seq=next(self._seq),
            resource=write.resource,
            operation=write.operation,
            record_id=write.record_id,
            record=copy.deepcopy(write.record),
            mutation_id=write.mutation_id,
            version=write.version,
            guard=copy.deepcopy(write.guard),
        )
        if after is None:
            table.pop(write.record_id, None)
        else:
            table[write.record_id] = after
        self._changelog[entry.seq] = entry
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

    async def acknowledge(self, seqs: Sequence[int]) -> None:
        for seq in seqs:
            entry = self._changelog.pop(seq, None)
            if entry is not None:
                self._mutation_ids.discard(entry.mutation_id)

    def _state(self, resource: str) -> ResourceState:
        return self._states.setdefault(resource, ResourceState(resource))

    async def states(self, resources: Sequence[str]) -> dict[str, ResourceState]:
        return {r: copy.copy(self._state(r)) for r in resources}

    def _rebase(self, resource: str, ids: set[str] | None) -> None:
        table = self._table(resource)
        for entry in self._changelog.values():
            if entry.resource != resource or (ids is not None and entry.record_id not in ids):
                continue
            after = apply_operation(
                table.get(entry.record_id), entry.operation, entry.record_id, entry.record
            )
            if after is None:
                table.pop(entry.record_id, None)
            else:
                table[entry.record_id] = after

    async def apply_pull(self, page: PullPage) -> None:
        for resource in (*page.records, *page.merged, *page.deleted, *page.cursors):
            self._table(resource)  # unknown resources: nothing is applied
        touched: dict[str, set[str]] = {}
        for resource, records in page.records.items():
            table = self._table(resource)
            for record in records:
                table[record["id"]] = copy.deepcopy(record)
                touched.setdefault(resource, set()).add(record["id"])
        for resource, deltas in page.merged.items():
            table = self._table(resource)
            for delta in deltas:
                table[delta["id"]] = (
                    apply_operation(table.get(delta["id"]), "merge", delta["id"], delta) or {}
                )
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
            self._rebase(resource, touched_ids)

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
            state.hydration = "hydrating"
            state.clone_cursor = start_cursor
        for record in records:
            table[record["id"]] = copy.deepcopy(record)
        state.clone_after_id = after_id
        self._rebase(resource, {r["id"] for r in records})

    async def finish_clone(self, resource: str) -> None:
        state = self._state(resource)
        state.cursor = max(state.cursor, state.clone_cursor or 0)
        state.hydration = "ready"
        state.clone_after_id = None
        state.clone_cursor = None
        self._rebase(resource, None)

    async def reset_hydration(self, resource: str) -> None:
        state = self._state(resource)
        state.hydration = "hydrating"
        state.clone_after_id = None
        state.clone_cursor = None


@hookimpl(trylast=True)
def datafn_register_client_stores(registry: Registry[Any]) -> None:
    registry.add("memory", MemoryClientStore, description="in-process, lost on exit")
