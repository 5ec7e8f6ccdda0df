"""The client store contract: what every local store (memory, SQLite, …) must provide.

A client store holds, for one client:

- the **records** of every local resource (one real table per resource in SQL stores);
- the **changelog**: local writes not yet acknowledged by the server, in write order;
- per-resource **sync state**: the pull cursor, the hydration state
  (``notStarted`` → ``hydrating`` → ``ready``) and, while hydrating, where the clone stands;
- a little **metadata** (the generated client id).

Two atomicity rules are part of the contract and checked by the conformance suite in
:mod:`datafn.testing.client_store`:

1. a local write and its changelog entry commit in one transaction (:meth:`ClientStore.write`);
2. applying a pull page and advancing its cursors commit in one transaction
   (:meth:`ClientStore.apply_pull`); likewise a clone page and the clone position
   (:meth:`ClientStore.apply_clone_page`).

Server data applied by a pull or clone is *rebased*: the pending changelog entries of the
touched records are applied again on top, so the local view is always "server state plus my
unacknowledged writes" — exactly what the server will hold once the changelog is pushed.

For every record with queued entries the store also keeps its **base**: the server's last known
state of the record (what it was before the oldest queued write, moved forward by pulls, clones
and acknowledged writes). A write the server refused, a dead letter and a discarded write are
taken out of the local view by replaying the remaining entries on the base, without asking the
server (:meth:`ClientStore.reject`). A merge pulled for such a record applies to the base, not
to the local view.

Stores are registered by name with ``datafn_register_client_stores``; ``factory(url, schema,
config)`` returns an unopened store, the client calls :meth:`ClientStore.open` and
:meth:`ClientStore.aclose`.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from datafn.errors import ValidationFailed

__all__ = [
    "HYDRATION_STATES",
    "ChangelogEntry",
    "ClientStore",
    "EntryState",
    "Hydration",
    "LocalWrite",
    "PullPage",
    "Query",
    "ResourceState",
    "apply_operation",
    "matches",
    "replay",
    "sort_records",
]

Hydration = Literal["notStarted", "hydrating", "ready"]

#: The hydration states in the order a resource goes through them.
HYDRATION_STATES: tuple[Hydration, ...] = ("notStarted", "hydrating", "ready")

Operation = Literal["insert", "merge", "replace", "delete"]

#: The states of a changelog entry: queued for push, or a dead letter (never pushed again).
EntryState = Literal["queued", "dead"]

#: Comparison operators accepted in query filters (``{"priority": {"gte": 2}}``).
FILTER_OPERATORS = frozenset({"eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains"})


@dataclass(frozen=True)
class LocalWrite:
    """A validated local write, before the store gives it a changelog position.

    ``record`` is the full record (with ``id``) for insert/replace, the delta (with ``id``) for
    merge and ``None`` for delete. ``guard`` is the optional ``if`` of the wire mutation.
    """

    resource: str
    operation: Operation
    record_id: str
    record: dict[str, Any] | None
    mutation_id: str
    version: int = 1
    guard: dict[str, Any] | None = None


@dataclass(frozen=True)
class ChangelogEntry:
    """One unacknowledged local write, ``seq`` being its position in the changelog."""

    seq: int
    resource: str
    operation: Operation
    record_id: str
    record: dict[str, Any] | None
    mutation_id: str
    version: int = 1
    guard: dict[str, Any] | None = None
    #: how many pushes sent this entry without a definitive answer
    attempts: int = 0
    #: the last error a push of this entry met (``CODE: message``), or None
    last_error: str | None = None
    #: ``queued`` (will be pushed) or ``dead`` (a dead letter: never pushed again)
    state: EntryState = "queued"
    #: the resource's pull cursor when the write was made (every change up to it had been
    #: seen): sent as ``baseSeq`` for conflict detection; None when the resource was not
    #: hydrated yet (no detection)
    base_seq: int | None = None

    def to_mutation(self, client_id: str) -> dict[str, Any]:
        """The wire form of this entry as one mutation of a push request."""
        mutation: dict[str, Any] = {
            "resource": self.resource,
            "version": self.version,
            "operation": self.operation,
            "id": self.record_id,
            "clientId": client_id,
            "mutationId": self.mutation_id,
        }
        if self.record is not None:
            mutation["record"] = self.record
        if self.guard is not None:
            mutation["if"] = self.guard
        if self.base_seq is not None:
            mutation["baseSeq"] = self.base_seq
        return mutation


@dataclass
class ResourceState:
    """The sync state of one resource.

    ``cursor`` is the pull cursor; while ``hydration`` is ``hydrating``, ``clone_after_id`` is
    the last id of the last applied clone page and ``clone_cursor`` where the server's change
    log stood when the clone began (the cursor the resource gets once the clone is done).
    """

    resource: str
    cursor: int = 0
    hydration: Hydration = "notStarted"
    clone_after_id: str | None = None
    clone_cursor: int | None = None


@dataclass(frozen=True)
class PullPage:
    """One pull answer as the store applies it: full records, merged deltas, deleted ids and
    the new per-resource cursors."""

    records: Mapping[str, Sequence[dict[str, Any]]] = field(default_factory=dict)
    merged: Mapping[str, Sequence[dict[str, Any]]] = field(default_factory=dict)
    deleted: Mapping[str, Sequence[str]] = field(default_factory=dict)
    cursors: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Query:
    """A local query: equality or operator filters, sort keys, paging.

    ``filters`` maps a field (or ``id``) to a value (equality) or to ``{operator: value}``
    with operators ``eq ne gt gte lt lte in nin contains``. ``sort`` lists fields, ``-field``
    for descending; records without a value sort first. The default order is by id.
    """

    filters: Mapping[str, Any] = field(default_factory=dict)
    sort: tuple[str, ...] = ()
    limit: int | None = None
    offset: int = 0

    def conditions(self) -> list[tuple[str, str, Any]]:
        """``(field, operator, value)`` for every filter, operators checked."""
        out = []
        for name, spec in self.filters.items():
            if isinstance(spec, Mapping):
                for op, value in spec.items():
                    if op not in FILTER_OPERATORS:
                        raise ValidationFailed(
                            f"unknown filter operator {op!r}; use one of "
                            + ", ".join(sorted(FILTER_OPERATORS)),
                            code="DFQL_INVALID",
                            path=f"filters.{name}.{op}",
                        )
                    if op in ("in", "nin") and not isinstance(value, list | tuple | set):
                        raise ValidationFailed(
                            f"{op!r} takes a list", code="DFQL_INVALID", path=f"filters.{name}.{op}"
                        )
                    out.append((name, op, value))
            else:
                out.append((name, "eq", spec))
        return out

    def sort_keys(self) -> list[tuple[str, bool]]:
        """``(field, descending)`` for every sort key."""
        return [(key[1:], True) if key.startswith("-") else (key, False) for key in self.sort]


class ClientStore(ABC):
    """The contract of a local store. Every method is a coroutine; implementations must be
    safe to call from one event loop (the client serialises nothing for them)."""

    #: The registry name of the store (``memory``, ``sqlite``).
    name: str = ""

    async def open(self) -> None:  # noqa: B027 - optional
        """Create tables, run migrations; called once before any other method."""

    async def aclose(self) -> None:  # noqa: B027 - optional
        """Release connections; the store is not used afterwards."""

    async def __aenter__(self) -> ClientStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- metadata ------------------------------------------------------------------------------

    @abstractmethod
    async def get_meta(self, key: str) -> str | None:
        """A metadata value (e.g. ``client_id``), or None."""

    @abstractmethod
    async def set_meta(self, key: str, value: str) -> None:
        """Store a metadata value durably."""

    # -- records -------------------------------------------------------------------------------

    @abstractmethod
    async def get(self, resource: str, record_id: str) -> dict[str, Any] | None:
        """The record, or None."""

    @abstractmethod
    async def query(self, resource: str, query: Query) -> list[dict[str, Any]]:
        """The records matching ``query``."""

    @abstractmethod
    async def count(self, resource: str) -> int:
        """How many records of ``resource`` the store holds."""

    @abstractmethod
    async def records_after(
        self, resource: str, after_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` records with ``id > after_id``, ordered by id (bounded paging)."""

    @abstractmethod
    async def unsynced_records(
        self, resource: str, after_id: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """For cloneUp, in one transaction: look at up to ``limit`` records with
        ``id > after_id`` in id order and return what the server should hold before the
        queued writes — a record without queued writes as it is, a record with queued writes
        as its base when that is a record (none when a queued write created it) — and the last
        id looked at (None when there are no more records).
        """

    async def synced_records_between(
        self, resource: str, after_id: str | None, until_id: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """For reconcile's digests: the records with ``after_id < id <= until_id`` (None:
        unbounded on that side) in id order, as :meth:`unsynced_records` gives them (what the
        server should hold: a record with queued writes as its base), looking at most at
        ``limit`` stored records; and the last id looked at (None once the range is
        exhausted). The records are only read. This default pages through
        :meth:`unsynced_records`; stores may answer it directly."""
        rows, last = await self.unsynced_records(resource, after_id, limit)
        if until_id is None:
            return rows, last
        kept = [row for row in rows if row["id"] <= until_id]
        return kept, (None if last is None or last >= until_id else last)

    # -- local writes and the changelog --------------------------------------------------------

    @abstractmethod
    async def write(self, write: LocalWrite) -> tuple[dict[str, Any] | None, ChangelogEntry]:
        """Apply a local write and append its changelog entry **in one transaction**.

        The entry's ``base_seq`` is the resource's cursor at that moment when the resource is
        ``ready`` (None otherwise): the server detects conflicts with it.

        :return: the record after the write (None after a delete) and the new entry.
        :raises Conflict: an ``insert`` whose id exists already (path ``id``); nothing is
            written.
        """

    @abstractmethod
    async def changelog(
        self, *, limit: int | None = None, resource: str | None = None
    ) -> list[ChangelogEntry]:
        """The oldest ``limit`` unacknowledged entries in changelog order."""

    @abstractmethod
    async def pending_count(self) -> int:
        """How many changelog entries are not yet acknowledged."""

    @abstractmethod
    async def acknowledge(self, seqs: Sequence[int]) -> None:
        """Remove the entries with these ``seq``: the server applied them. Their effect moves
        into the base of their records (the local view does not change)."""

    @abstractmethod
    async def reject(self, seqs: Sequence[int]) -> set[str]:
        """Remove the entries with these ``seq``: the server refused them for good, and take
        their effect out of the local view (each touched record becomes its base with the
        remaining entries replayed on top), in one transaction.

        :return: the resources where a base was unknown (entries written by an older version
            of the store): the caller re-clones them.
        """

    @abstractmethod
    async def dead_letter(self, seqs: Sequence[int], error: str) -> set[str]:
        """Like :meth:`reject`, but keep the entries as dead letters (``state="dead"``,
        ``last_error=error``): listed by :meth:`dead_letters`, never by :meth:`changelog`,
        never counted by :meth:`pending_count`."""

    @abstractmethod
    async def dead_letters(self) -> list[ChangelogEntry]:
        """The dead letters, oldest first."""

    @abstractmethod
    async def discard(self, mutation_id: str) -> tuple[ChangelogEntry | None, set[str]]:
        """Remove the queued entry or dead letter with this mutation id; a queued one is taken
        out of the local view as by :meth:`reject`.

        :return: the removed entry (None when there is none) and the resources to re-clone.
        """

    @abstractmethod
    async def record_attempt(self, seqs: Sequence[int], error: str | None) -> None:
        """Count one more push attempt of these entries and remember its error (None: the
        answer was lost, so the outcome is unknown)."""

    # -- sync state ----------------------------------------------------------------------------

    @abstractmethod
    async def states(self, resources: Sequence[str]) -> dict[str, ResourceState]:
        """The sync state of each resource (defaults for resources never synced)."""

    @abstractmethod
    async def apply_pull(self, page: PullPage) -> None:
        """Apply one pull page and set its cursors **in one transaction**, then rebase the
        pending changelog entries of the touched records on top (same transaction)."""

    @abstractmethod
    async def apply_clone_page(
        self,
        resource: str,
        records: Sequence[dict[str, Any]],
        *,
        after_id: str | None,
        start_cursor: int | None = None,
        reset: bool = False,
    ) -> None:
        """Upsert clone records and remember ``after_id`` **in one transaction**.

        ``records`` are one or more consecutive pages (up to ``clone-buffer-pages`` of them,
        in id order). On the first page ``start_cursor`` is where the server's change log stood; the
        resource becomes ``hydrating`` and, with ``reset``, its records are cleared first (a
        re-clone), all in the same transaction. Pending entries of the page's records are
        rebased.
        """

    @abstractmethod
    async def finish_clone(self, resource: str) -> None:
        """Mark the resource ``ready`` with cursor = ``clone_cursor`` (even when that is below
        the old cursor: the server may have been restored from a backup; changes pulled twice
        are applied alike) and rebase every pending entry of the resource (records written
        locally but absent remotely)."""

    @abstractmethod
    async def reset_hydration(self, resource: str) -> None:
        """Mark the resource for a re-clone: ``hydrating`` with no clone page applied (no clone
        cursor, no last id), keeping its records and cursor until the first page replaces them.
        Never ``notStarted``: that state means "never hydrated", whose local records cloneUp
        would upload."""


# ---------------------------------------------------------------------------------------------
# helpers shared by the stores: the semantics of an operation and of a query on plain dicts
# ---------------------------------------------------------------------------------------------


def apply_operation(
    current: dict[str, Any] | None,
    operation: str,
    record_id: str,
    record: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """The record after ``operation`` (PROTOCOL.md semantics, last writer wins)."""
    if operation == "delete":
        return None
    body = copy.deepcopy(record) if record is not None else {}
    body["id"] = record_id
    if operation == "merge" and current is not None:
        merged = dict(current)
        merged.update(body)
        return merged
    return body


def replay(base: dict[str, Any] | None, entries: Sequence[ChangelogEntry]) -> dict[str, Any] | None:
    """The record ``base`` with ``entries`` (of that record, in changelog order) applied."""
    record = copy.deepcopy(base)
    for entry in entries:
        record = apply_operation(record, entry.operation, entry.record_id, entry.record)
    return record


def _cmp_key(value: Any) -> tuple[int, Any]:
    # None first, then booleans, numbers, strings; containers compare by their JSON text.
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    import json

    return (4, json.dumps(value, sort_keys=True))


def _test(value: Any, op: str, arg: Any) -> bool:
    if op == "eq":
        return bool(value == arg) and isinstance(value, bool) == isinstance(arg, bool)
    if op == "ne":
        return not _test(value, "eq", arg)
    if op == "in":
        return any(_test(value, "eq", a) for a in arg)
    if op == "nin":
        return not any(_test(value, "eq", a) for a in arg)
    if op == "contains":
        if isinstance(value, str) and isinstance(arg, str):
            return arg in value
        if isinstance(value, list):
            return any(_test(v, "eq", arg) for v in value)
        return False
    if value is None or arg is None:
        return False
    left, right = _cmp_key(value), _cmp_key(arg)
    if left[0] != right[0]:
        return False
    if op == "gt":
        return bool(left[1] > right[1])
    if op == "gte":
        return bool(left[1] >= right[1])
    if op == "lt":
        return bool(left[1] < right[1])
    return bool(left[1] <= right[1])  # lte


def matches(record: Mapping[str, Any], conditions: Sequence[tuple[str, str, Any]]) -> bool:
    """Whether ``record`` satisfies every ``(field, operator, value)`` condition."""
    return all(_test(record.get(name), op, arg) for name, op, arg in conditions)


def sort_records(records: list[dict[str, Any]], keys: Sequence[tuple[str, bool]]) -> None:
    """Sort in place by ``keys`` (stable; the last key is applied first), then by id."""
    records.sort(key=lambda r: r["id"])
    for name, descending in reversed(keys):
        records.sort(key=lambda r, n=name: _cmp_key(r.get(n)), reverse=descending)  # type: ignore[misc]
