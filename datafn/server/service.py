"""The protocol operations of the server, on parsed requests: the one place their rules live.

:class:`SyncService` validates a decoded request body against the wire models, the schema and
the limits (raising :class:`~datafn.errors.ValidationFailed` with a path), and runs it against
a :class:`~datafn.server.store.ServerStore` in one namespace, answering the wire form of the
result. HTTP, authentication and hooks are the business of :mod:`datafn.server.app`.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from datafn.config import LimitsSettings
from datafn.digest import CAPABILITY as DIGEST_CAPABILITY
from datafn.digest import MAX_DIGEST_RANGES, ReconcileDigestRequest
from datafn.errors import CursorExpired, ValidationFailed
from datafn.protocol import (
    CAPABILITIES,
    CloneRequest,
    GlobalPullRequest,
    Mutation,
    PullRequest,
    PushRequest,
    ReconcileRequest,
    SeedClientRequest,
    SeedRequest,
)
from datafn.schema import ResourceSpec, Schema, _describe
from datafn.server.bus import NotificationBus
from datafn.server.digest import answer_digest_request
from datafn.server.store import (
    Change,
    MutationError,
    PendingMutation,
    RecordTexts,
    ServerStore,
)

__all__ = ["PreparedPush", "PreparedSeed", "SyncService", "fold_changes"]

log = logging.getLogger("datafn.server")

Request = CloneRequest | PullRequest | ReconcileRequest

#: The operations of a push this server performs; any other is refused per mutation.
OPERATIONS = frozenset({"insert", "merge", "replace", "delete"})


def is_feed_key(name: str) -> bool:
    """A pull cursor key that is not a resource: the original client's actor feed
    (``__datafn_actor_feed__``) and many-many join stores (``join_<from>_<rel>_<to>``). Their
    cursors are answered as sent (this server keeps neither)."""
    return name.startswith(("__datafn_", "join_"))


@dataclass(frozen=True, slots=True)
class PreparedPush:
    request: PushRequest
    mutations: list[PendingMutation]


@dataclass(frozen=True, slots=True)
class PreparedSeed:
    request: SeedRequest
    data: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _limit_exceeded(message: str, path: str) -> ValidationFailed:
    return ValidationFailed(message, code="LIMIT_EXCEEDED", path=path)


def _seq_of(change: Change) -> int:
    return change.seq


def _last_id(rows: Sequence[dict[str, Any]]) -> str:
    """The id of a page's last record (without parsing it when the store gave texts)."""
    return rows.ids[-1] if isinstance(rows, RecordTexts) else str(rows[-1]["id"])


def _check_text(value: str, path: str, what: str) -> None:
    # PostgreSQL text cannot hold NUL; refusing it everywhere keeps every store equal.
    if "\x00" in value:
        raise ValidationFailed(f"{what} must not contain NUL characters", path=path)


def fold_changes(
    changes: list[Change],
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]], dict[str, list[str]]]:
    """Fold change-log rows (in seq order) into the ``records``, ``merged`` and ``deleted``
    of a pull answer: one entry per id, each list sorted by id.

    Per id, the last full write (insert or replace) with the merges after it folded in goes to
    ``records``; merges alone fold into one delta in ``merged``; a delete wins over what came
    before it.
    """
    state: dict[tuple[str, str], tuple[str, dict[str, Any] | None]] = {}
    for change in changes:
        if change.op == "expire":  # a compaction floor, no record (see _refuse_expired)
            continue
        key = (change.resource, change.id)
        if change.op == "delete":
            state[key] = ("deleted", None)
        elif change.op == "merge":
            kind, data = state.get(key, ("merged", None))
            if kind == "deleted" or data is None:
                state[key] = ("merged", dict(change.data or {}))
            else:
                data.update(change.data or {})
        else:
            state[key] = ("records", dict(change.data or {}))
    records: dict[str, list[dict[str, Any]]] = {}
    merged: dict[str, list[dict[str, Any]]] = {}
    deleted: dict[str, list[str]] = {}
    for (resource, record_id), (kind, data) in sorted(state.items()):
        if kind == "deleted":
            deleted.setdefault(resource, []).append(record_id)
        elif kind == "merged":
            assert data is not None
            merged.setdefault(resource, []).append(data)
        else:
            assert data is not None
            records.setdefault(resource, []).append(data)
    return records, merged, deleted


def pulled_conflicts(changes: Sequence[Change]) -> list[dict[str, Any]]:
    """The ``conflicts`` of a pull answer: one entry per change of it that overwrote a
    conflict, in seq order (``seq`` and ``clientId``: the winning change and its writer)."""
    return [
        {
            "resource": change.resource,
            "id": change.id,
            "seq": change.seq,
            "clientId": change.client_id,
            "conflict": change.conflict,
        }
        for change in changes
        if change.conflict is not None
    ]


def _refuse_expired(
    changes: Sequence[Change], cursors: Mapping[str, int], path: str | None = None
) -> None:
    """Refuse a pull that read a resource's ``expire`` row: its cursor is below the compaction
    floor, so a delete it needs may have been dropped (docs/server.md, "Retention")."""
    floors = {c.resource: c.seq for c in changes if c.op == "expire"}
    if not floors:
        return
    expired = sorted(floors)
    raise CursorExpired(
        f"the cursor of {', '.join(map(repr, expired))} is older than this server's change "
        "log keeps (deletes past tombstone-ttl are dropped); clone "
        + ("it" if len(expired) == 1 else "them")
        + " again, then pull",
        path=path or f"cursors.{expired[0]}",
        details={
            "resources": expired,
            "floors": {r: str(floors[r]) for r in expired},
            "cursors": {r: str(cursors[r]) for r in expired if r in cursors},
        },
    )


def _refused_mutation(raw: Any, path: str) -> PendingMutation | None:
    """A mutation refused on its own, as the original refuses it (the batch goes on): one
    that is not an object, lacks its mutation id, or names an operation this server does not
    perform (``trash``, ``relate``, capability operations: ``DFQL_UNSUPPORTED``)."""
    if not isinstance(raw, dict):
        error = MutationError("DFQL_INVALID", "a mutation must be an object", path)
        return PendingMutation("", "", "delete", "", None, error=error)
    mutation_id = raw.get("mutationId")
    if not isinstance(mutation_id, str) or not mutation_id:
        error = MutationError(
            "DFQL_INVALID", "the mutation has no mutationId", f"{path}.mutationId"
        )
        return PendingMutation("", "", "delete", "", None, error=error)
    operation = raw.get("operation")
    if not isinstance(operation, str) or operation not in OPERATIONS:
        error = MutationError(
            "DFQL_UNSUPPORTED",
            f"unsupported operation {_describe(operation)}; this server performs "
            + ", ".join(sorted(OPERATIONS)),
            f"{path}.operation",
        )
        resource = raw.get("resource")
        record_id = raw.get("id")
        return PendingMutation(
            mutation_id,
            resource if isinstance(resource, str) else "",
            "delete",
            record_id if isinstance(record_id, str) else "",
            None,
            error=error,
        )
    return None


class SyncService:
    """Validates and runs clone, pull, push, reconcile, seed and status for one schema."""

    def __init__(
        self,
        schema: Schema,
        store: ServerStore,
        limits: LimitsSettings | None = None,
        bus: NotificationBus | None = None,
    ) -> None:
        self.schema = schema
        self.store = store
        self.limits = limits or LimitsSettings()
        self.bus = bus

    # -- validation ------------------------------------------------------------------------

    def validate(self, action: str, payload: Any) -> Any:
        """The parsed, checked request of ``action``; raises ValidationFailed with a path."""
        if action == "clone":
            return self.validate_clone(payload)
        if action == "pull":
            if isinstance(payload, dict) and "cursor" in payload and "cursors" not in payload:
                return self.validate_global_pull(payload)
            return self.validate_pull(payload)
        if action == "push":
            return self.validate_push(payload)
        if action == "reconcile":
            return self.validate_reconcile(payload)
        if action == "seed":
            return self.validate_seed(payload)
        raise ValidationFailed(f"unknown action {_describe(action)}", code="DFQL_UNSUPPORTED")

    def _syncable(self, name: Any, path: str) -> ResourceSpec:
        spec = self.schema.resource(name, path=path)
        if spec.is_remote_only:
            raise ValidationFailed(
                f"resource {spec.name!r} is remote-only and is never synced", path=path
            )
        return spec

    def _check_id(self, value: Any, path: str) -> None:
        if isinstance(value, str):
            if len(value) > self.limits.max_id_length:
                raise _limit_exceeded(
                    f"an id has at most {self.limits.max_id_length} characters, got {len(value)}",
                    path,
                )
            _check_text(value, path, "an id")

    def validate_clone(self, payload: Any) -> CloneRequest:
        if isinstance(payload, dict) and isinstance(payload.get("page"), dict):
            self._check_id(payload["page"].get("afterId"), "page.afterId")
        request = CloneRequest.from_wire(payload)
        _check_text(request.client_id, "clientId", "clientId")
        for index, table in enumerate(request.tables or ()):
            self._syncable(table, f"tables[{index}]")
        if request.page is not None:
            self._syncable(request.page.table, "page.table")
        return request

    def validate_pull(self, payload: Any) -> PullRequest:
        request = PullRequest.from_wire(payload)
        _check_text(request.client_id, "clientId", "clientId")
        for name in request.cursors:
            if not is_feed_key(name):
                self._syncable(name, f"cursors.{name}")
        return request

    def validate_global_pull(self, payload: Any) -> GlobalPullRequest:
        request = GlobalPullRequest.from_wire(payload)
        _check_text(request.client_id, "clientId", "clientId")
        return request

    def validate_reconcile(self, payload: Any) -> ReconcileRequest | ReconcileDigestRequest:
        if isinstance(payload, dict) and ("digest" in payload or "fetch" in payload):
            for form in ("digest", "fetch"):
                spec = payload.get(form)
                ranges = spec.get("ranges") if isinstance(spec, dict) else None
                # bounds are ids: the id length limit and no NUL (PostgreSQL text holds none);
                # more ranges than allowed are refused by the model below
                listed = ranges[:MAX_DIGEST_RANGES] if isinstance(ranges, list) else []
                for index, item in enumerate(listed):
                    if isinstance(item, dict):
                        for bound in ("after", "until"):
                            self._check_id(item.get(bound), f"{form}.ranges[{index}].{bound}")
            digest = ReconcileDigestRequest.from_wire(payload)  # the content form
            _check_text(digest.client_id, "clientId", "clientId")
            form = "digest" if digest.digest is not None else "fetch"
            self._syncable(digest.resource, f"{form}.resource")
            return digest
        request = ReconcileRequest.from_wire(payload)
        _check_text(request.client_id, "clientId", "clientId")
        for index, name in enumerate(request.resources):
            self._syncable(name, f"resources[{index}]")
        return request

    def validate_push(self, payload: Any) -> PreparedPush:
        mutations = payload.get("mutations") if isinstance(payload, dict) else None
        if isinstance(mutations, list):
            if len(mutations) > self.limits.max_batch_size:
                raise _limit_exceeded(
                    f"a push holds at most {self.limits.max_batch_size} mutations, "
                    f"got {len(mutations)}",
                    "mutations",
                )
            for index, raw in enumerate(mutations):
                if isinstance(raw, dict):
                    self._check_id(raw.get("id"), f"mutations[{index}].id")
                    self._check_id(raw.get("mutationId"), f"mutations[{index}].mutationId")
        request = PushRequest.from_wire(payload)
        _check_text(request.client_id, "clientId", "clientId")
        pending = []
        for index, raw in enumerate(request.mutations):
            base = f"mutations[{index}]"
            refused = _refused_mutation(raw, base)
            if refused is not None:
                pending.append(refused)
                continue
            try:
                # the body was walked whole by PushRequest.from_wire
                mutation = Mutation.from_wire(raw, path_prefix=base, json_checked=True)
            except ValidationFailed as exc:  # refused alone, like a record that does not validate
                pending.append(
                    PendingMutation(
                        raw["mutationId"],
                        "",
                        "delete",
                        "",
                        None,
                        error=MutationError(exc.code, exc.message, exc.path),
                    )
                )
                continue
            error = None
            record = None
            try:
                spec = self.schema.resource(mutation.resource, path=f"{base}.resource")
                if mutation.operation != "delete":
                    record = {
                        "id": mutation.id,
                        **spec.validate_record(
                            mutation.record,
                            partial=mutation.operation == "merge",
                            path=f"{base}.record",
                        ),
                    }
                if mutation.if_ is not None:
                    for key in mutation.if_:
                        if key != "id" and spec.field(key) is None:
                            raise ValidationFailed(
                                f"unknown field {key!r} of resource {spec.name!r}",
                                code="DFQL_UNKNOWN_FIELD",
                                path=f"{base}.if.{key}",
                            )
            except ValidationFailed as exc:
                error = MutationError(exc.code, exc.message, exc.path)
                record = None
            pending.append(
                PendingMutation(
                    mutation_id=mutation.mutation_id,
                    resource=mutation.resource,
                    operation=mutation.operation,
                    id=mutation.id,
                    record=record,
                    guard=dict(mutation.if_) if mutation.if_ is not None else None,
                    error=error,
                    base_seq=mutation.base_seq,
                )
            )
        return PreparedPush(request, pending)

    def validate_seed(self, payload: Any) -> PreparedSeed | SeedClientRequest:
        if isinstance(payload, dict) and "data" not in payload and "clientId" in payload:
            client = SeedClientRequest.from_wire(payload)  # the original's form: no data
            _check_text(client.client_id, "clientId", "clientId")
            return client
        request = SeedRequest.from_wire(payload)
        data: dict[str, list[dict[str, Any]]] = {}
        for name, records in request.data.items():
            spec = self.schema.resource(name, path=f"data.{name}")
            out = data.setdefault(spec.name, [])
            for index, record in enumerate(records):
                path = f"data.{name}[{index}]"
                self._check_id(record.get("id"), f"{path}.id")
                valid = spec.validate_record(record, path=path)
                out.append({"id": valid.pop("id", None) or spec.new_id(), **valid})
        return PreparedSeed(request, data)

    # -- operations --------------------------------------------------------------------------

    async def run(self, action: str, namespace: str, request: Any) -> dict[str, Any]:
        """Run a validated request (see :meth:`validate`); answers the wire result."""
        if action == "clone":
            return await self.clone(namespace, request)
        if action == "pull":
            return await self.pull(namespace, request)
        if action == "push":
            return await self.push(namespace, request)
        if action == "reconcile":
            return await self.reconcile(namespace, request)
        if action == "seed":
            return await self.seed(namespace, request)
        raise ValidationFailed(f"unknown action {_describe(action)}", code="DFQL_UNSUPPORTED")

    def status(self) -> dict[str, Any]:
        limits = self.limits
        return {
            "schemaHash": self.schema.hash,
            "capabilities": [*CAPABILITIES, DIGEST_CAPABILITY],
            "limits": {
                "maxBodyBytes": limits.max_body_bytes,
                "maxBatchSize": limits.max_batch_size,
                "maxPullLimit": limits.max_pull_limit,
                "maxClonePage": limits.max_clone_page,
                "maxCloneRecords": limits.max_clone_records,
                "maxIdLength": limits.max_id_length,
            },
            "serverTimeMs": int(time.time() * 1000),
            # clients compare it with their own when the hashes differ (compatible changes
            # sync on; see docs/protocol.md)
            "schema": self.schema.to_dict(),
        }

    async def clone(self, namespace: str, request: CloneRequest) -> dict[str, Any]:
        store = self.store
        page_size = self.limits.max_clone_page
        if request.page is not None:
            table = request.page.table
            limit = min(request.page.limit, page_size)
            # The cursor is read before the records: a change the records miss is above it
            # (and it is at least the compaction floor: the expire row is in the log).
            seq, rows = await store.clone_page_at(namespace, table, request.page.after_id, limit)
            return {
                "ok": True,
                "data": {table: rows},
                "cursors": {table: str(seq)},
                "next": {table: _last_id(rows) if len(rows) >= limit else None},
            }
        if request.tables is None:
            tables = synced_resources(self.schema)
        else:
            tables = list(dict.fromkeys(request.tables))
        # Without a page, every record of every table: clients that ask this way (the
        # original's default) ignore `next`, so a partial answer would leave a table short
        # for good. Over `max-clone-records` the answer is an error, never a truncated table.
        cursors = await store.latest_seq(namespace, tables)
        budget = self.limits.max_clone_records
        data: dict[str, Sequence[dict[str, Any]]] = {}
        for table in tables:
            # One record more than allowed tells "too many" without a COUNT.
            rows = await store.clone_page(namespace, table, None, budget + 1)
            if len(rows) > budget:
                raise _limit_exceeded(
                    f"a clone without `page` answers at most {self.limits.max_clone_records} "
                    "records; ask page by page (`page`: {table, afterId, limit})",
                    "page",
                )
            data[table] = rows
            budget -= len(rows)
        return {
            "ok": True,
            "data": data,
            "cursors": {table: str(cursors[table]) for table in tables},
        }

    async def pull(
        self, namespace: str, request: PullRequest | GlobalPullRequest
    ) -> dict[str, Any]:
        if isinstance(request, GlobalPullRequest):
            return await self.global_pull(namespace, request)
        cursors = {name: int(value) for name, value in request.cursors.items()}
        resources = {name: seq for name, seq in cursors.items() if not is_feed_key(name)}
        limit = min(request.limit or self.limits.max_pull_limit, self.limits.max_pull_limit)
        changes = await self.store.changes_since(namespace, resources, limit + 1)
        _refuse_expired(changes, cursors)
        has_more = len(changes) > limit
        if has_more:
            changes = changes[:limit]
        records, merged, deleted = fold_changes(changes)
        for change in changes:
            cursors[change.resource] = change.seq  # in seq order: ends at the highest
        answer: dict[str, Any] = {
            "ok": True,
            "records": records,
            "merged": merged,
            "deleted": deleted,
            "cursors": {name: str(seq) for name, seq in cursors.items()},
            "hasMore": has_more,
        }
        conflicts = pulled_conflicts(changes)
        if conflicts:  # only when there are: answers stay as they were otherwise
            answer["conflicts"] = conflicts
        return answer

    async def global_pull(self, namespace: str, request: GlobalPullRequest) -> dict[str, Any]:
        """The changes of every synced resource after one global cursor, in seq order:
        ``op`` is ``upsert`` (the stored record, or the delta of a merge) or ``delete``;
        ``nextCursor`` is the seq of the last change, null when there was none.

        A cursor below a compaction floor is refused (``CURSOR_EXPIRED``), but for 0: that
        answer reaches past the floor (:meth:`_past_the_floor`), so its next pages are not."""
        since = int(request.cursor)
        limit = min(request.limit or 100, self.limits.max_pull_limit)
        names = synced_resources(self.schema)
        changes = await self.store.changes_since(namespace, dict.fromkeys(names, since), limit)
        if since:
            _refuse_expired(changes, dict.fromkeys(names, since), path="cursor")
        elif len(changes) >= limit:
            changes = await self._past_the_floor(namespace, names, changes)
        # from 0 a client holds no server data a dropped delete would concern (the original
        # client's cloneUp asks that way): the expire rows are left out
        listed = [change for change in changes if change.op != "expire"]
        return {
            "ok": True,
            "changes": [
                {
                    "serverSeq": change.seq,
                    "resource": change.resource,
                    "id": change.id,
                    "op": "delete" if change.op == "delete" else "upsert",
                    "record": None
                    if change.op == "delete"
                    else {**(change.data or {}), "id": change.id},
                    **(
                        {"conflict": {**change.conflict, "by": change.client_id}}
                        if change.conflict is not None
                        else {}
                    ),
                }
                for change in listed
            ],
            "nextCursor": str(changes[-1].seq) if changes else None,
        }

    async def _past_the_floor(
        self, namespace: str, names: list[str], page: list[Change]
    ) -> list[Change]:
        """The first answer of a global pull from 0, given its first ``page`` (full): when a
        compaction floor lies beyond it, every change up to the floor, read from one snapshot,
        and the rest of the page. A next page from below the floor would be refused, as the
        deletes dropped there may concern what this page gave; past it, nothing was dropped.
        Up to the floor the log is compacted (one row per record), but it may hold more than
        ``max-clone-records`` changes: then the answer is LIMIT_EXCEEDED, as for a clone."""
        floors = await self.store.compaction_floors(namespace, names)
        if max(floors.values(), default=0) <= page[-1].seq:
            return page
        budget = self.limits.max_clone_records
        changes = await self.store.changes_since(namespace, dict.fromkeys(names, 0), budget + 1)
        # the floor as this snapshot has it (compaction may have raised it since)
        floor = max(
            [*floors.values(), *(change.seq for change in changes if change.op == "expire")]
        )
        through = bisect.bisect_right(changes, floor, key=_seq_of)
        if through > budget:
            raise _limit_exceeded(
                f"a global pull from cursor 0 answers every change up to the compaction floor "
                f"(seq {floor}) at once, at most {budget}; clone page by page instead "
                "(`page`: {table, afterId, limit}), then pull from the clone's cursors",
                "cursor",
            )
        return changes[: max(through, len(page))]

    async def push(self, namespace: str, prepared: PreparedPush) -> dict[str, Any]:
        request = prepared.request
        outcome = await self.store.apply_push(namespace, request.client_id, prepared.mutations)
        applied: list[str] = []
        errors: list[dict[str, Any]] = []
        for mutation, result in zip(prepared.mutations, outcome.results, strict=True):
            if result is None:
                applied.append(mutation.mutation_id)
            else:
                errors.append(
                    {
                        "mutationId": mutation.mutation_id,
                        "code": result.code,
                        "message": result.message,
                        "path": result.path,
                        "retryable": result.retryable,
                        **({"details": result.details} if result.details is not None else {}),
                    }
                )
        await self._publish(namespace, outcome.cursor_before, outcome.cursor)
        answer: dict[str, Any] = {
            "ok": not errors,
            "applied": applied,
            "errors": errors,
            "cursor": str(outcome.cursor),
            "cursorBefore": str(outcome.cursor_before),
            # Empty on purpose: the original client moves its per-resource cursors to these
            # values, which would skip a change another client committed just before this
            # push. Without them it pulls (or re-pulls its own writes), and misses nothing.
            "cursors": {},
        }
        if outcome.conflicts:  # only when there are: answers stay as they were otherwise
            answer["conflicts"] = [
                {
                    "mutationId": prepared.mutations[index].mutation_id,
                    "resource": prepared.mutations[index].resource,
                    "id": prepared.mutations[index].id,
                    "conflict": conflict,
                }
                for index, conflict in sorted(outcome.conflicts.items())
            ]
        return answer

    async def reconcile(
        self, namespace: str, request: ReconcileRequest | ReconcileDigestRequest
    ) -> dict[str, Any]:
        if isinstance(request, ReconcileDigestRequest):
            return await answer_digest_request(
                self.store,
                self.schema,
                namespace,
                request,
                fetch_limit=self.limits.max_clone_page,
            )
        names = list(dict.fromkeys(request.resources))
        return {"ok": True, "counts": await self.store.counts(namespace, names)}

    async def seed(
        self, namespace: str, prepared: PreparedSeed | SeedClientRequest
    ) -> dict[str, Any]:
        if isinstance(prepared, SeedClientRequest):
            return {"ok": True, "inserted": {}}  # the original's form seeds no data
        before = await self.store.namespace_seq(namespace)
        inserted = await self.store.seed(namespace, prepared.data)
        if any(inserted.values()):
            await self._publish(namespace, before, await self.store.namespace_seq(namespace))
        return {"ok": True, "inserted": inserted}

    async def _publish(self, namespace: str, before: int, after: int) -> None:
        if self.bus is None or after <= before:
            return
        try:
            await self.bus.publish(namespace, after)
        except Exception:  # fail-open: the write is committed, pullers catch up anyway
            log.warning("publishing seq %s of %r failed", after, namespace, exc_info=True)


def synced_resources(schema: Schema) -> list[str]:
    """The resources a clone without ``tables`` and a global-cursor pull serve: every
    resource of the schema but the remote-only ones."""
    return [r.name for r in schema.resources if not r.is_remote_only]


def resources_of(action: str, request: Any, schema: Schema) -> tuple[str, ...]:
    """The resources a validated request concerns (for the hooks' SyncContext): for the
    forms that name none (a clone without ``tables``, the global-cursor pull), every resource
    they serve, so a policy on resources sees them (:func:`synced_resources`)."""
    names: Mapping[str, Any] | list[str]
    if action == "clone":
        if request.page is not None:
            return (request.page.table,)
        names = synced_resources(schema) if request.tables is None else request.tables
    elif action == "pull":
        if isinstance(request, GlobalPullRequest):
            return tuple(synced_resources(schema))
        names = [name for name in request.cursors if not is_feed_key(name)]
    elif action == "push":
        names = [m.resource for m in request.mutations if m.resource]
    elif action == "reconcile":
        names = request.resources
    elif action == "seed":
        if isinstance(request, SeedClientRequest):
            return ()
        names = request.data
    else:
        return ()
    return tuple(dict.fromkeys(names))
