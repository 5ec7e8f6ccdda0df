"""What a push or a seed does to the records: the one implementation every store shares.

A store reads the current state of the records a batch touches and the idempotency records of
its mutation ids (under its namespace lock), hands them to :func:`plan_push` (or
:func:`plan_seed`) and writes the plan back in the same transaction. Keeping the semantics
here means that memory, SQLite and PostgreSQL cannot disagree on them:

- ``insert`` of an existing identical record is a no-op success, of a different one a
  ``CONFLICT`` at ``id``; ``merge`` updates the given fields and creates a missing record
  (defaults filled in; the created record must be valid like an insert's, else the merge is
  refused with the insert's error, e.g. ``DFQL_INVALID`` at ``mutations[i].record.title``);
  ``replace`` is a full upsert; ``delete`` of a missing record succeeds and records nothing;
- an ``if`` guard must match the stored record field by field (an absent field counts as
  ``null``), else ``CONFLICT`` at ``if`` (the message names the field);
- each effective change gets the next seq; the change log stores the full record for
  ``insert``/``replace``, the delta for ``merge`` and nothing for ``delete``;
- a mutation id already in the idempotency records (or earlier in the same batch) is a
  replay: reported with its first outcome, applied again never. Applied mutations and
  non-retryable failures are recorded; validation failures are not (they are deterministic).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from datafn.errors import ValidationFailed
from datafn.schema import Schema, _json_equal
from datafn.server.store import Change, ChangeOp, MutationError, PendingMutation

__all__ = [
    "APPLIED",
    "PushPlan",
    "SeedPlan",
    "decode_outcome",
    "encode_outcome",
    "plan_push",
    "plan_seed",
    "touched_keys",
]

#: The stored outcome of an applied mutation.
APPLIED: dict[str, Any] = {"ok": True}

Key = tuple[str, str]


def encode_outcome(result: MutationError | None) -> dict[str, Any]:
    """The JSON form of a mutation's outcome, as kept in the idempotency records."""
    if result is None:
        return dict(APPLIED)
    return {"ok": False, "code": result.code, "message": result.message, "path": result.path}


def decode_outcome(data: Mapping[str, Any]) -> MutationError | None:
    """The outcome :func:`encode_outcome` stored (``None`` means applied)."""
    if data.get("ok"):
        return None
    return MutationError(
        str(data.get("code", "INTERNAL")), str(data.get("message", "")), str(data.get("path", "$"))
    )


def touched_keys(mutations: Sequence[PendingMutation]) -> dict[str, set[str]]:
    """The record ids a batch may touch, per resource (the rows a store must read)."""
    keys: dict[str, set[str]] = {}
    for mutation in mutations:
        if mutation.error is None:
            keys.setdefault(mutation.resource, set()).add(mutation.id)
    return keys


@dataclass(slots=True)
class PushPlan:
    """The effects of a push: what to write and what to answer."""

    #: one entry per mutation: None (applied) or its error
    results: list[MutationError | None]
    #: the final state of every record that changed: the record, or None when deleted
    writes: dict[Key, dict[str, Any] | None] = field(default_factory=dict)
    #: the change-log rows, in seq order
    changes: list[Change] = field(default_factory=list)
    #: new idempotency records: mutation id → outcome (see encode_outcome)
    idempotency: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the highest seq allocated (the starting seq when none was)
    last_seq: int = 0
    #: the highest seq allocated per resource
    cursors: dict[str, int] = field(default_factory=dict)


def _conflict(message: str, path: str) -> MutationError:
    return MutationError("CONFLICT", message, path)


def _guard_error(
    guard: Mapping[str, Any], current: Mapping[str, Any] | None
) -> MutationError | None:
    if current is None:
        return _conflict("the record does not exist, so the if guard cannot match", "if")
    for key, expected in guard.items():
        if not _json_equal(current.get(key), expected):
            return _conflict(f"the if guard does not match the stored value of {key!r}", "if")
    return None


def plan_push(
    schema: Schema,
    mutations: Sequence[PendingMutation],
    *,
    existing: Mapping[Key, dict[str, Any] | None],
    replays: Mapping[str, Mapping[str, Any]],
    seq: int,
) -> PushPlan:
    """Decide what a batch does, given the stored state.

    :param existing: the stored record of every key of :func:`touched_keys` (None: missing).
    :param replays: the idempotency records found for the batch's mutation ids.
    :param seq: the namespace's seq counter before the batch.
    """
    plan = PushPlan(results=[], last_seq=seq)
    state: dict[Key, dict[str, Any] | None] = dict(existing)
    seen: dict[str, MutationError | None] = {}
    for index, mutation in enumerate(mutations):
        mid = mutation.mutation_id
        if mid in seen:  # the same mutation twice in one batch: a replay of the first
            plan.results.append(seen[mid])
            continue
        if mid in replays:
            result = decode_outcome(replays[mid])
            seen[mid] = result
            plan.results.append(result)
            continue
        if mutation.error is not None:
            plan.results.append(mutation.error)
            continue
        key = (mutation.resource, mutation.id)
        current = state.get(key)
        result, change = _apply_one(schema, mutation, current, f"mutations[{index}].record")
        if change is not None:
            plan.last_seq += 1
            change_row = Change(plan.last_seq, mutation.resource, mutation.id, *change)
            plan.changes.append(change_row)
            plan.cursors[mutation.resource] = plan.last_seq
            state[key] = new = _after(change_row, current)
            plan.writes[key] = new
        seen[mid] = result
        plan.results.append(result)
        if result is None or not result.retryable:
            plan.idempotency[mid] = encode_outcome(result)
    return plan


def _apply_one(
    schema: Schema, mutation: PendingMutation, current: dict[str, Any] | None, path: str
) -> tuple[MutationError | None, tuple[ChangeOp, dict[str, Any] | None] | None]:
    """The outcome of one mutation and the change it makes (op, data), if any."""
    if mutation.guard is not None:
        problem = _guard_error(mutation.guard, current)
        if problem is not None:
            return problem, None
    op = mutation.operation
    record = mutation.record
    if op == "delete":
        return None, (("delete", None) if current is not None else None)
    assert record is not None
    if op == "insert":
        if current is None:
            return None, ("insert", record)
        if _json_equal(current, record):
            return None, None
        return _conflict("a different record with this id already exists", "id"), None
    if op == "replace":
        return None, ("replace", record)
    # merge
    if current is None:
        # the merge creates the record: it must be a valid record, as an insert would be
        try:
            created = schema.resource(mutation.resource).validate_record(record, path=path)
        except ValidationFailed as exc:
            return MutationError(exc.code, exc.message, exc.path), None
        return None, ("insert", created)
    return None, ("merge", record)


def _after(change: Change, current: dict[str, Any] | None) -> dict[str, Any] | None:
    if change.op == "delete":
        return None
    assert change.data is not None
    if change.op == "merge" and current is not None:
        return {**current, **change.data}
    return change.data


@dataclass(slots=True)
class SeedPlan:
    """The effects of a seed: inserts only."""

    writes: dict[Key, dict[str, Any]] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    inserted: dict[str, int] = field(default_factory=dict)
    last_seq: int = 0


def plan_seed(
    data: Mapping[str, Sequence[dict[str, Any]]],
    *,
    existing: Mapping[Key, Any],
    seq: int,
) -> SeedPlan:
    """Insert every record whose id is not stored yet (nor earlier in ``data``)."""
    plan = SeedPlan(last_seq=seq)
    for resource, records in data.items():
        plan.inserted[resource] = 0
        for record in records:
            key = (resource, record["id"])
            if existing.get(key) is not None or key in plan.writes:
                continue
            plan.last_seq += 1
            plan.writes[key] = record
            plan.changes.append(Change(plan.last_seq, resource, record["id"], "insert", record))
            plan.inserted[resource] += 1
    return plan
