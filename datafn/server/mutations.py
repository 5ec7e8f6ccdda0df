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
  non-retryable failures are recorded; validation failures are not (they are deterministic);
- a mutation with a ``baseSeq`` conflicts when the record has changes with seq above it, made
  by another client, that touched a field the mutation sets (``insert``, ``replace`` and
  ``delete`` touch every field) and that the same client has not overwritten since. The
  conflict is settled by the ``datafn_resolve_conflict`` hook, else by the resource's policy
  (:class:`ConflictRules`): ``last-writer-wins`` applies the write and reports the conflict
  (in the push answer and on the change-log row), ``reject`` refuses it with ``CONFLICT`` and
  the current record in the error's details.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from datafn.errors import ValidationFailed
from datafn.schema import Schema, _json_equal
from datafn.server.store import Change, ChangeOp, MutationError, PendingMutation

__all__ = [
    "APPLIED",
    "CONFLICT_POLICIES",
    "MAX_CONFLICT_HISTORY",
    "ConflictRules",
    "PushPlan",
    "RecordHistory",
    "SeedPlan",
    "decode_outcome",
    "encode_outcome",
    "history_wanted",
    "plan_push",
    "plan_seed",
    "touched_keys",
]

log = logging.getLogger("datafn.server")

#: The stored outcome of an applied mutation.
APPLIED: dict[str, Any] = {"ok": True}

Key = tuple[str, str]


def encode_outcome(
    result: MutationError | None, conflict: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON form of a mutation's outcome, as kept in the idempotency records (with the
    conflict an applied mutation overwrote, so a replay reports it again)."""
    if result is None:
        return dict(APPLIED) if conflict is None else {**APPLIED, "conflict": dict(conflict)}
    out = {"ok": False, "code": result.code, "message": result.message, "path": result.path}
    if result.details is not None:
        out["details"] = result.details
    return out


def decode_outcome(data: Mapping[str, Any]) -> MutationError | None:
    """The outcome :func:`encode_outcome` stored (``None`` means applied)."""
    if data.get("ok"):
        return None
    details = data.get("details")
    return MutationError(
        str(data.get("code", "INTERNAL")),
        str(data.get("message", "")),
        str(data.get("path", "$")),
        details if isinstance(details, dict) else None,
    )


# -- conflicts ---------------------------------------------------------------------------------

#: The conflict policies of ``[tool.datafn.server.conflicts]``.
CONFLICT_POLICIES: tuple[str, ...] = ("last-writer-wins", "reject")

ConflictPolicy = Literal["last-writer-wins", "reject"]

#: The most change-log rows of one record a push reads to find what changed after a
#: ``baseSeq`` (newest first); past them every field counts as touched by an unknown client.
MAX_CONFLICT_HISTORY = 200

#: ``resolver(resource=, record_id=, operation=, fields=, current=, incoming=, base_seq=,
#: client_id=, other_client_id=)`` → the fields to apply, or None (the policy decides).
ConflictResolver = Callable[..., dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class ConflictRules:
    """How a push settles conflicts: a policy per resource (``default`` for the others) and
    an optional resolver (the ``datafn_resolve_conflict`` hook), asked first."""

    default: ConflictPolicy = "last-writer-wins"
    policies: Mapping[str, ConflictPolicy] = field(default_factory=dict)
    resolver: ConflictResolver | None = None

    def policy(self, resource: str) -> ConflictPolicy:
        return self.policies.get(resource, self.default)


@dataclass(frozen=True, slots=True)
class RecordHistory:
    """A record's latest change-log rows after the lowest ``baseSeq`` of the batch's writes of
    it, newest first (at most :data:`MAX_CONFLICT_HISTORY`); ``complete`` is False when
    there were more (the older ones are unknown)."""

    rows: Sequence[Change]
    complete: bool = True


def history_wanted(
    mutations: Sequence[PendingMutation],
    existing: Mapping[Key, dict[str, Any] | None],
    record_seqs: Mapping[Key, int],
) -> dict[Key, int]:
    """The records whose change-log rows after a base a store must read for conflict
    detection: key → the lowest ``baseSeq`` of the batch's writes of it.

    Only a write with a ``baseSeq`` below the record's last seq (``record_seqs``) needs them:
    a record last changed at or below every base has no conflict, and costs no read. A
    ``merge`` or ``replace`` of a missing record whose seq the store does not know (a deleted
    record) reads them too: the delete may be the change it did not see.
    """
    wanted: dict[Key, int] = {}
    for mutation in mutations:
        base = mutation.base_seq
        if base is None or mutation.error is not None:
            continue
        key = (mutation.resource, mutation.id)
        last = record_seqs.get(key)
        if last is None:
            if existing.get(key) is not None or mutation.operation not in ("merge", "replace"):
                continue
        elif last <= base:
            continue
        wanted[key] = min(base, wanted.get(key, base))
    return wanted


def _fields_of(op: str, data: Mapping[str, Any] | None) -> set[str] | None:
    """The fields a write sets (None: every field)."""
    if op != "merge" or data is None:
        return None
    return {name for name in data if name != "id"}


def _detect(
    mutation: PendingMutation,
    history: RecordHistory | None,
    client_id: str | None,
    current: Mapping[str, Any] | None,
    own: Sequence[Change] = (),
) -> dict[str, Any] | None:
    """The conflict of one write with a ``baseSeq``, or None.

    ``own``: the changes this batch already made to the record (the same client's). A field
    another client changed counts only when no later change of this client set it again: the
    other value was overwritten once, and reported then.
    """
    base = mutation.base_seq
    if base is None or history is None:
        return None
    mine = _fields_of(mutation.operation, mutation.record)
    every = {*(current or {}), *(mutation.record or {})} - {"id"}
    fields: set[str] = set()
    latest: Change | None = None
    rows = sorted(
        [*(row for row in history.rows if row.seq > base), *own], key=lambda row: -row.seq
    )
    covered: set[str] | None = set()  # what this client set after (None: every field)
    for row in rows:
        theirs = _fields_of(row.op, row.data)
        if row.client_id is not None and row.client_id == client_id:
            if covered is not None:
                covered = None if theirs is None else covered | theirs
            continue
        if covered is None:
            break  # this client rewrote the whole record since: nothing older counts
        if mine is None and theirs is None:
            overlap = every or {"*"}
        elif mine is None or theirs is None:
            overlap = set((mine if theirs is None else theirs) or ())
        else:
            overlap = mine & theirs
        overlap -= covered
        if overlap:
            fields |= overlap
            if latest is None or row.seq > latest.seq:
                latest = row
    oldest = min((row.seq for row in history.rows), default=None)
    unknown = not history.complete and (oldest is None or oldest > base + 1)
    if unknown and covered is not None:  # rows between the base and the oldest row read
        fields |= (mine if mine is not None else (every or {"*"})) - covered
    if not fields:
        return None
    fields.discard("*")
    names = sorted(fields)
    conflict: dict[str, Any] = {"fields": names, "baseSeq": base}
    if latest is not None:
        conflict["seq"] = latest.seq
        if latest.client_id is not None:
            conflict["clientId"] = latest.client_id
    elif history.rows:
        conflict["seq"] = max(row.seq for row in history.rows)
    conflict["previous"] = None if current is None else {name: current.get(name) for name in names}
    return conflict


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
    #: the conflict each applied mutation overwrote, by its index in the batch
    conflicts: dict[int, dict[str, Any]] = field(default_factory=dict)


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
    client_id: str | None = None,
    history: Mapping[Key, RecordHistory] | None = None,
    rules: ConflictRules | None = None,
) -> PushPlan:
    """Decide what a batch does, given the stored state.

    :param existing: the stored record of every key of :func:`touched_keys` (None: missing).
    :param replays: the idempotency records found for the batch's mutation ids.
    :param seq: the namespace's seq counter before the batch.
    :param client_id: the pushing client (kept on each change-log row).
    :param history: per key of :func:`history_wanted`, the record's rows after the base.
    :param rules: how conflicts are settled (None: last writer wins, reported).
    """
    plan = PushPlan(results=[], last_seq=seq)
    state: dict[Key, dict[str, Any] | None] = dict(existing)
    seen: dict[str, tuple[MutationError | None, dict[str, Any] | None]] = {}
    histories = history or {}
    for index, mutation in enumerate(mutations):
        mid = mutation.mutation_id
        if mid in seen:  # the same mutation twice in one batch: a replay of the first
            result, reported = seen[mid]
            plan.results.append(result)
            if reported is not None:
                plan.conflicts[index] = reported
            continue
        if mid in replays:
            result = decode_outcome(replays[mid])
            stored = replays[mid].get("conflict") if result is None else None
            reported = stored if isinstance(stored, dict) else None
            seen[mid] = (result, reported)
            plan.results.append(result)
            if reported is not None:
                plan.conflicts[index] = reported
            continue
        if mutation.error is not None:
            plan.results.append(mutation.error)
            continue
        key = (mutation.resource, mutation.id)
        current = state.get(key)
        path = f"mutations[{index}]"
        result, change = _apply_one(schema, mutation, current, f"{path}.record")
        conflict = None
        if result is None and change is not None and key in histories:
            own = [c for c in plan.changes if (c.resource, c.id) == key]
            conflict = _detect(mutation, histories[key], client_id, current, own)
            if conflict is not None:
                result, change, conflict = _settle(
                    schema, mutation, current, change, conflict, client_id, rules, path
                )
        if change is not None:
            plan.last_seq += 1
            if conflict is not None:  # the writer learns the seq its write won with
                conflict = {**conflict, "winningSeq": plan.last_seq}
            change_row = Change(
                plan.last_seq, mutation.resource, mutation.id, *change, client_id, conflict
            )
            plan.changes.append(change_row)
            plan.cursors[mutation.resource] = plan.last_seq
            state[key] = new = _after(change_row, current)
            plan.writes[key] = new
        if conflict is not None:
            plan.conflicts[index] = conflict
        seen[mid] = (result, conflict)
        plan.results.append(result)
        if result is None or not result.retryable:
            plan.idempotency[mid] = encode_outcome(result, conflict)
    return plan


def _settle(
    schema: Schema,
    mutation: PendingMutation,
    current: dict[str, Any] | None,
    change: tuple[ChangeOp, dict[str, Any] | None],
    conflict: dict[str, Any],
    client_id: str | None,
    rules: ConflictRules | None,
    path: str,
) -> tuple[
    MutationError | None, tuple[ChangeOp, dict[str, Any] | None] | None, dict[str, Any] | None
]:
    """Settle a detected conflict: the resolver first, else the resource's policy.

    :return: the mutation's outcome, the change it makes and the conflict to report.
    """
    rules = rules or ConflictRules()
    if rules.resolver is not None:
        resolved = rules.resolver(
            resource=mutation.resource,
            record_id=mutation.id,
            operation=mutation.operation,
            fields=list(conflict["fields"]),
            current=None if current is None else dict(current),
            incoming=None if mutation.record is None else dict(mutation.record),
            base_seq=mutation.base_seq,
            client_id=client_id,
            other_client_id=conflict.get("clientId"),
        )
        if resolved is not None:
            if not isinstance(resolved, Mapping):
                raise TypeError(
                    "datafn_resolve_conflict must return a dict of fields or None, "
                    f"got {type(resolved).__name__}"
                )
            spec = schema.resource(mutation.resource)
            delta = {k: v for k, v in resolved.items() if k != "id"}
            try:
                if current is None:
                    created = spec.validate_record({"id": mutation.id, **delta}, path=path)
                    made: tuple[ChangeOp, dict[str, Any] | None] = ("insert", created)
                else:
                    valid = spec.validate_record(delta, partial=True, path=f"{path}.resolved")
                    made = ("merge", {"id": mutation.id, **valid})
            except ValidationFailed as exc:
                log.error("datafn_resolve_conflict returned an invalid record: %s", exc)
                return MutationError(exc.code, exc.message, exc.path), None, None
            return None, made, {**conflict, "resolution": "resolver"}
    if rules.policy(mutation.resource) == "reject":
        fields = ", ".join(conflict["fields"])
        details = {k: v for k, v in conflict.items() if k != "previous"}
        details["current"] = None if current is None else dict(current)
        error = MutationError(
            "CONFLICT",
            f"the record changed after baseSeq {mutation.base_seq} ({fields}); "
            "merge with the current record and write again",
            "baseSeq",
            details,
        )
        return error, None, None
    return None, change, {**conflict, "resolution": "last-writer-wins"}


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
