"""The in-memory server store: for tests, demos and embedding; nothing survives the process.

Records are kept as orjson bytes, so the store hands out copies and normalises values exactly
as the SQL stores do. Every method runs without awaiting in between, so on one event loop each
push is atomic and seqs become visible in order.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from datafn.server.mutations import plan_push, plan_seed, touched_keys
from datafn.server.store import Change, PendingMutation, PushOutcome, RecordTexts, ServerStore

__all__ = ["MemoryServerStore"]


@dataclass
class _Namespace:
    seq: int = 0
    #: resource → id → record (orjson bytes)
    records: dict[str, dict[str, bytes]] = field(default_factory=dict)
    #: resource → ids in code-point order
    ids: dict[str, list[str]] = field(default_factory=dict)
    #: resource → change-log rows in seq order (data as orjson bytes)
    changes: dict[str, list[tuple[int, str, str, bytes | None]]] = field(default_factory=dict)
    #: (client id, mutation id) → outcome
    idempotency: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def get(self, resource: str, record_id: str) -> dict[str, Any] | None:
        raw = self.records.get(resource, {}).get(record_id)
        return None if raw is None else orjson.loads(raw)

    def put(self, resource: str, record_id: str, record: dict[str, Any] | None) -> None:
        table = self.records.setdefault(resource, {})
        ids = self.ids.setdefault(resource, [])
        if record is None:
            if table.pop(record_id, None) is not None:
                del ids[bisect.bisect_left(ids, record_id)]
            return
        if record_id not in table:
            bisect.insort(ids, record_id)
        table[record_id] = orjson.dumps(record)

    def log(self, changes: Sequence[Change]) -> None:
        for change in changes:
            data = None if change.data is None else orjson.dumps(change.data)
            self.changes.setdefault(change.resource, []).append(
                (change.seq, change.id, change.op, data)
            )


class MemoryServerStore(ServerStore):
    """``memory://``: a server store held in a dict per namespace."""

    name = "memory"

    def __init__(self, url: str = "memory://", schema: Any = None, config: Any = None) -> None:
        super().__init__(url, schema, config)
        self._namespaces: dict[str, _Namespace] = {}

    def _ns(self, namespace: str) -> _Namespace:
        found = self._namespaces.get(namespace)
        if found is None:
            found = self._namespaces[namespace] = _Namespace()
        return found

    async def apply_push(
        self, namespace: str, client_id: str, mutations: Sequence[PendingMutation]
    ) -> PushOutcome:
        ns = self._ns(namespace)
        replays = {}
        for mutation in mutations:
            raw = ns.idempotency.get((client_id, mutation.mutation_id))
            if raw is not None:
                replays[mutation.mutation_id] = orjson.loads(raw)
        existing = {
            (resource, record_id): ns.get(resource, record_id)
            for resource, ids in touched_keys(mutations).items()
            for record_id in ids
        }
        plan = plan_push(self.schema, mutations, existing=existing, replays=replays, seq=ns.seq)
        # Encode everything before touching the state, so a failure leaves nothing half-done.
        outcomes = {mid: orjson.dumps(outcome) for mid, outcome in plan.idempotency.items()}
        before = ns.seq
        for (resource, record_id), record in plan.writes.items():
            ns.put(resource, record_id, record)
        ns.log(plan.changes)
        for mid, raw in outcomes.items():
            ns.idempotency[(client_id, mid)] = raw
        ns.seq = plan.last_seq
        return PushOutcome(plan.results, before, plan.last_seq, plan.cursors)

    async def seed(
        self, namespace: str, data: Mapping[str, Sequence[dict[str, Any]]]
    ) -> dict[str, int]:
        ns = self._ns(namespace)
        existing = {
            (resource, record["id"]): ns.records.get(resource, {}).get(record["id"])
            for resource, records in data.items()
            for record in records
        }
        plan = plan_seed(data, existing=existing, seq=ns.seq)
        for (resource, record_id), record in plan.writes.items():
            ns.put(resource, record_id, record)
        ns.log(plan.changes)
        ns.seq = plan.last_seq
        return plan.inserted

    async def changes_since(
        self, namespace: str, cursors: Mapping[str, int], limit: int
    ) -> list[Change]:
        ns = self._namespaces.get(namespace)
        if ns is None or limit <= 0:
            return []

        def rows(resource: str, after: int) -> Iterator[tuple[int, str, str, str, bytes | None]]:
            log = ns.changes.get(resource, [])
            start = bisect.bisect_right(log, after, key=lambda row: row[0])
            for seq, record_id, op, data in log[start : start + limit]:
                yield seq, resource, record_id, op, data

        merged = heapq.merge(*(rows(r, c) for r, c in cursors.items()), key=lambda row: row[0])
        out = []
        for seq, resource, record_id, op, data in merged:
            out.append(
                Change(seq, resource, record_id, op, None if data is None else orjson.loads(data))  # type: ignore[arg-type]
            )
            if len(out) >= limit:
                break
        return out

    async def clone_page(
        self, namespace: str, resource: str, after_id: str | None, limit: int
    ) -> RecordTexts:
        ns = self._namespaces.get(namespace)
        if ns is None:
            return RecordTexts([], [])
        ids = ns.ids.get(resource, [])
        start = 0 if after_id is None else bisect.bisect_right(ids, after_id)
        table = ns.records[resource] if ids else {}
        picked = ids[start : start + limit]
        return RecordTexts(picked, [table[i] for i in picked])

    async def latest_seq(self, namespace: str, resources: Sequence[str]) -> dict[str, int]:
        ns = self._namespaces.get(namespace)
        out = {}
        for resource in resources:
            log = ns.changes.get(resource) if ns else None
            out[resource] = log[-1][0] if log else 0
        return out

    async def counts(self, namespace: str, resources: Sequence[str]) -> dict[str, int]:
        ns = self._namespaces.get(namespace)
        return {r: len(ns.records.get(r, {})) if ns else 0 for r in resources}

    async def namespace_seq(self, namespace: str) -> int:
        ns = self._namespaces.get(namespace)
        return ns.seq if ns else 0
