"""The in-memory server store: for tests, demos and embedding; nothing survives the process.

Records are kept as orjson bytes, so the store hands out copies and normalises values exactly
as the SQL stores do. Every method runs without awaiting in between, so on one event loop each
push is atomic and seqs become visible in order.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

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
    #: (client id, mutation id) → when it was recorded, oldest first (insertion order)
    idempotency_at: dict[tuple[str, str], float] = field(default_factory=dict)
    #: retention: (seq, time) marks, the walks' positions, the floors per resource
    marks: list[tuple[int, float]] = field(default_factory=list)
    compacted_to: int = 0
    tombstones_to: int = 0
    floors: dict[str, int] = field(default_factory=dict)
    #: (resource, id) → the seq of the record's last change (kept for deleted records too)
    record_seqs: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (resource, id) → the seqs of the record's change-log rows (some may be compacted away)
    record_log: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    #: seq → (writing client id, conflict as orjson bytes) of the change-log rows that have them
    provenance: dict[int, tuple[str | None, bytes | None]] = field(default_factory=dict)

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
            self.record_seqs[(change.resource, change.id)] = change.seq
            self.record_log.setdefault((change.resource, change.id), []).append(change.seq)
            if change.client_id is not None or change.conflict is not None:
                conflict = None if change.conflict is None else orjson.dumps(change.conflict)
                self.provenance[change.seq] = (change.client_id, conflict)

    def change(
        self, resource: str, seq: int, record_id: str, op: str, data: bytes | None
    ) -> Change:
        """A change-log row with its provenance."""
        client_id, conflict = self.provenance.get(seq, (None, None))
        return Change(
            seq,
            resource,
            record_id,
            op,  # type: ignore[arg-type]
            None if data is None else orjson.loads(data),
            client_id,
            None if conflict is None else orjson.loads(conflict),
        )

    def history(self, resource: str, record_id: str, after: int) -> RecordHistory:
        """The record's latest change-log rows above ``after``, newest first (bounded)."""
        log = self.changes.get(resource, [])
        rows: list[Change] = []
        for seq in reversed(self.record_log.get((resource, record_id), [])):
            if seq <= after:
                break
            at = bisect.bisect_left(log, seq, key=lambda row: row[0])
            if at == len(log) or log[at][0] != seq or log[at][1] != record_id:
                continue  # compacted away
            if len(rows) >= MAX_CONFLICT_HISTORY:
                return RecordHistory(rows, complete=False)
            rows.append(self.change(resource, *log[at]))
        return RecordHistory(rows)


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
        wanted = history_wanted(mutations, existing, ns.record_seqs)
        history = {key: ns.history(*key, base) for key, base in wanted.items()}
        plan = plan_push(
            self.schema,
            mutations,
            existing=existing,
            replays=replays,
            seq=ns.seq,
            client_id=client_id,
            history=history,
            rules=self.conflict_rules,
        )
        # Encode everything before touching the state, so a failure leaves nothing half-done.
        outcomes = {mid: orjson.dumps(outcome) for mid, outcome in plan.idempotency.items()}
        before = ns.seq
        for (resource, record_id), record in plan.writes.items():
            ns.put(resource, record_id, record)
        ns.log(plan.changes)
        now = time.time()
        for mid, raw in outcomes.items():
            ns.idempotency[(client_id, mid)] = raw
            ns.idempotency_at.setdefault((client_id, mid), now)
        ns.seq = plan.last_seq
        return PushOutcome(plan.results, before, plan.last_seq, plan.cursors, plan.conflicts)

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
            out.append(ns.change(resource, seq, record_id, op, data))
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

    async def records_between(
        self,
        namespace: str,
        resource: str,
        after_id: str | None,
        until_id: str | None,
        limit: int,
    ) -> RecordTexts:
        ns = self._namespaces.get(namespace)
        ids = ns.ids.get(resource, []) if ns is not None else []
        if ns is None or not ids:
            return RecordTexts([], [])
        start = 0 if after_id is None else bisect.bisect_right(ids, after_id)
        end = len(ids) if until_id is None else bisect.bisect_right(ids, until_id)
        picked = ids[start : min(end, start + limit)]
        table = ns.records[resource]
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

    # -- retention ---------------------------------------------------------------------------

    supports_retention = True

    async def prune_idempotency(self, before: float, limit: int) -> int:
        deleted = 0
        for ns in self._namespaces.values():
            expired: list[tuple[str, str]] = []
            for key, at in ns.idempotency_at.items():  # oldest first
                if at >= before or deleted + len(expired) >= limit:
                    break
                expired.append(key)
            for key in expired:
                del ns.idempotency_at[key]
                ns.idempotency.pop(key, None)
            deleted += len(expired)
            if deleted >= limit:
                break
        return deleted

    async def retention_namespaces(self, after: str | None, limit: int) -> list[str]:
        names = sorted(self._namespaces)
        start = 0 if after is None else bisect.bisect_right(names, after)
        return names[start : start + limit]

    async def mark_horizons(self, namespace: str, now: float, ages: Sequence[float]) -> list[int]:
        ns = self._ns(namespace)
        if not ns.marks or ns.marks[-1][0] != ns.seq:
            ns.marks.append((ns.seq, now))
        answers = []
        for age in ages:
            found = [seq for seq, at in ns.marks if at <= now - age]
            answers.append(found[-1] if found else 0)
        oldest = now - max(ages, default=0.0)
        older = [i for i, (_, at) in enumerate(ns.marks) if at <= oldest]
        if len(older) > 1:  # keep the newest of the marks every age has passed
            del ns.marks[: older[-1]]
        return answers

    async def compact_changes(self, namespace: str, horizon: int, limit: int) -> CompactionStep:
        ns = self._ns(namespace)
        start = ns.compacted_to
        rows = self._rows(ns, start, horizon, limit)
        if not rows:
            ns.compacted_to = max(start, horizon)
            return CompactionStep(done=True)
        first = rows[0].seq
        wanted = {(c.resource, c.id) for c in rows}
        previous: dict[tuple[str, str], Change] = {}
        for resource in {c.resource for c in rows}:
            for seq, record_id, op, data in ns.changes.get(resource, []):
                if seq >= first:
                    break
                if (resource, record_id) in wanted and op != "expire":
                    previous[(resource, record_id)] = _change(resource, seq, record_id, op, data)
        plan = plan_compaction(rows, previous)
        gone = set(plan.delete)
        rewrites = {c.seq: c for c in plan.rewrite}
        for resource in {c.resource for c in rows} | {k[0] for k in previous}:
            log = ns.changes.get(resource, [])
            kept = []
            for row in log:
                if row[0] in gone:
                    continue
                change = rewrites.get(row[0])
                if change is not None:
                    row = (row[0], row[1], change.op, orjson.dumps(change.data))
                kept.append(row)
            ns.changes[resource] = kept
        done = len(rows) < limit
        ns.compacted_to = max(start, horizon) if done else rows[-1].seq
        return CompactionStep(len(rows), len(gone), len(rewrites), 0, done)

    async def drop_tombstones(self, namespace: str, horizon: int, limit: int) -> CompactionStep:
        ns = self._ns(namespace)
        start = ns.tombstones_to
        rows = self._rows(ns, start, horizon, limit, "delete")
        dropped: set[int] = set()
        floors: dict[str, int] = {}
        for change in rows:
            later = any(
                seq > change.seq and record_id == change.id and op != "expire"
                for seq, record_id, op, _ in ns.changes.get(change.resource, [])
            )
            if not later:
                dropped.add(change.seq)
                floors[change.resource] = max(change.seq, floors.get(change.resource, 0))
        for resource, floor in floors.items():  # one expire row per resource, at its floor
            kept: list[tuple[int, str, str, bytes | None]] = []
            for row in ns.changes[resource]:
                if row[0] == floor:
                    kept.append((floor, EXPIRE_ID, "expire", None))
                elif row[0] not in dropped and row[2] != "expire":
                    kept.append(row)
            ns.changes[resource] = kept
            ns.floors[resource] = max(floor, ns.floors.get(resource, 0))
        done = len(rows) < limit
        ns.tombstones_to = max(start, horizon) if done else rows[-1].seq
        return CompactionStep(len(rows), 0, 0, len(dropped), done)

    async def compaction_floors(self, namespace: str, resources: Sequence[str]) -> dict[str, int]:
        ns = self._namespaces.get(namespace)
        return {r: ns.floors.get(r, 0) if ns else 0 for r in resources}

    @staticmethod
    def _rows(
        ns: _Namespace, after: int, horizon: int, limit: int, op: str | None = None
    ) -> list[Change]:
        """At most ``limit`` change-log rows with ``after < seq <= horizon`` (of operation
        ``op`` only, when given), in seq order."""

        def rows(resource: str) -> Iterator[tuple[int, str, str, str, bytes | None]]:
            log = ns.changes[resource]
            for seq, record_id, kind, data in log[bisect.bisect_right(log, after, key=_seq) :]:
                if seq > horizon:
                    return
                if op is None or kind == op:
                    yield seq, resource, record_id, kind, data

        merged = heapq.merge(*(rows(r) for r in list(ns.changes)), key=lambda row: row[0])
        return [
            _change(resource, seq, record_id, kind, data)
            for seq, resource, record_id, kind, data in itertools.islice(merged, limit)
        ]


def _seq(row: tuple[int, str, str, bytes | None]) -> int:
    return row[0]


def _change(resource: str, seq: int, record_id: str, op: str, data: bytes | None) -> Change:
    return Change(seq, resource, record_id, op, None if data is None else orjson.loads(data))  # type: ignore[arg-type]
