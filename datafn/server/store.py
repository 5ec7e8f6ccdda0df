"""The server store contract: what the DataFn server needs from a database.

A server store keeps, per namespace, the records of every resource, the change log (one row per
seq), the idempotency records of push and the namespace's seq counter. It does storage only:
the protocol logic (what a mutation does, how changes fold into a pull answer, paging rules,
error envelopes) lives once in :mod:`datafn.server`, and every store runs the same
conformance suite (:mod:`datafn.testing.server_store`).

The one hard requirement is the visibility rule of the protocol: a change with seq ``n`` may
only become visible to readers once every change with a lower seq of the same namespace is
visible. Stores meet it by allocating seqs under a per-namespace lock held until the write
commits (``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite, the event loop
for the memory store), so commits happen in seq order.

Stores are built by a factory registered with ``datafn_register_server_stores``::

    @hookimpl
    def datafn_register_server_stores(registry):
        registry.add("mystore", MyStore)   # MyStore(url, schema, config)
"""

from __future__ import annotations

import abc
import bisect
import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, overload

import orjson

from datafn.schema import Schema

if TYPE_CHECKING:
    from datafn.server.mutations import ConflictRules

__all__ = [
    "EXPIRE_ID",
    "HEALTH_NAMESPACE",
    "Change",
    "ChangeOp",
    "CompactionStep",
    "MutationError",
    "PendingMutation",
    "PushOutcome",
    "RecordTexts",
    "ServerStore",
]

#: What a change-log row records: ``insert``/``replace`` carry the full record, ``merge`` the
#: delta (with ``id``), ``delete`` nothing. ``expire`` (id ``""``, no data) is written by
#: retention only: the resource's compaction floor, at most one row per resource; a pull that
#: reads it is refused with ``CURSOR_EXPIRED`` (a delete it needs was dropped).
ChangeOp = Literal["insert", "merge", "replace", "delete", "expire"]

#: The record id of an ``expire`` row (no record has it: ids are never empty).
EXPIRE_ID = ""

#: The namespace :meth:`ServerStore.check_ready` reads: not printable, so no request has it.
HEALTH_NAMESPACE = "\x00health"


@dataclass(frozen=True, slots=True)
class Change:
    """One row of a namespace's change log."""

    seq: int
    resource: str
    id: str
    op: ChangeOp
    data: dict[str, Any] | None
    #: the client whose push made the change (None: a seed, or a row older than provenance);
    #: provenance, not compared (two rows are equal when they change the same thing)
    client_id: str | None = field(default=None, compare=False)
    #: the conflict this change overwrote (see :func:`datafn.server.mutations.plan_push`)
    conflict: dict[str, Any] | None = field(default=None, compare=False)


class RecordTexts(Sequence[dict[str, Any]]):
    """A page of records kept as the JSON texts the store holds, parsed only when read.

    Stores that keep each record as JSON text answer clone pages with it, so the server writes
    the page into its answer without parsing and re-serializing every record. Reading it (a
    hook looking at a result) gives ordinary dicts, each parsed once and then kept; what a
    reader changes in them is what is sent.

    :param ids: the id of each record, in order.
    :param texts: each record as a JSON object text, in the same order.
    """

    __slots__ = ("_parsed", "_texts", "ids")

    def __init__(self, ids: Sequence[str], texts: Sequence[str | bytes]) -> None:
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} record texts")
        self.ids: list[str] = list(ids)
        self._texts: list[str | bytes] = list(texts)
        self._parsed: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._texts)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> RecordTexts: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | RecordTexts:
        if isinstance(index, slice):
            picked = range(len(self._texts))[index]
            page = RecordTexts([self.ids[i] for i in picked], [self._texts[i] for i in picked])
            page._parsed = {n: self._parsed[i] for n, i in enumerate(picked) if i in self._parsed}
            return page
        position = range(len(self._texts))[operator.index(index)]  # IndexError when out of range
        record = self._parsed.get(position)
        if record is None:
            record = self._parsed[position] = orjson.loads(self._texts[position])
        return record

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for position in range(len(self._texts)):
            yield self[position]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RecordTexts({len(self)} records)"

    def to_json(self) -> Any:
        """What ``orjson.dumps`` writes for this page (its ``default`` hook calls this): the
        texts as they are, with the records a reader parsed (and may have changed) in place."""
        if not self._parsed:
            texts = self._texts
            try:
                return orjson.Fragment("[" + ",".join(texts) + "]")  # type: ignore[arg-type]
            except TypeError:  # bytes among them
                encoded = (t.encode() if isinstance(t, str) else t for t in texts)
                return orjson.Fragment(b"[" + b",".join(encoded) + b"]")
        return [
            self._parsed[i] if i in self._parsed else orjson.Fragment(text)
            for i, text in enumerate(self._texts)
        ]


@dataclass(frozen=True, slots=True)
class MutationError:
    """Why one mutation of a push was not applied (becomes an entry of ``errors``)."""

    code: str
    message: str
    path: str = "$"
    #: what the client needs to act on the refusal (a ``CONFLICT`` of a ``baseSeq``: the
    #: current record and who changed it), sent as the error's ``details``
    details: dict[str, Any] | None = None

    @property
    def retryable(self) -> bool:
        from datafn.errors import RETRYABLE_CODES

        return self.code in RETRYABLE_CODES


@dataclass(frozen=True, slots=True)
class PendingMutation:
    """A push mutation after validation, as the server hands it to :meth:`ServerStore.apply_push`.

    ``record`` is the validated record (with ``id``; a partial one for ``merge``), ``guard`` the
    ``if`` object, ``base_seq`` the wire ``baseSeq`` (the client had seen every change up to
    it; None: no conflict detection). ``error`` is set when validation already failed: the
    store still looks the mutation up in the idempotency records (a replay of an applied
    mutation stays applied) but applies nothing.
    """

    mutation_id: str
    resource: str
    operation: Literal["insert", "merge", "replace", "delete"]
    id: str
    record: dict[str, Any] | None = None
    guard: dict[str, Any] | None = None
    error: MutationError | None = None
    base_seq: int | None = None


@dataclass(slots=True)
class PushOutcome:
    """What one push did.

    ``results`` holds one entry per mutation, in order: ``None`` when it was applied (or is
    an idempotent replay of an applied one), else its error. ``cursor_before`` is the
    namespace's seq when the push took the lock, ``cursor`` the highest seq it allocated
    (``cursor_before`` when none), ``cursors`` the highest seq allocated per resource,
    ``conflicts`` the conflict each applied mutation overwrote, by its index.
    """

    results: list[MutationError | None]
    cursor_before: int
    cursor: int
    cursors: dict[str, int] = field(default_factory=dict)
    conflicts: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class CompactionStep:
    """What one batch of :meth:`ServerStore.compact_changes` or
    :meth:`ServerStore.drop_tombstones` did.

    ``examined`` change-log rows were read; ``removed`` rows were deleted because a later
    change of the same record is kept; ``rewritten`` merges became full ``replace`` rows (the
    record as it stood at that seq); ``dropped`` deletes older than the tombstone horizon were
    deleted; ``done`` tells that the store has reached the horizon.
    """

    examined: int = 0
    removed: int = 0
    rewritten: int = 0
    dropped: int = 0
    done: bool = True


class ServerStore(abc.ABC):
    """Base class of every server store; an async context manager (``open`` / ``aclose``).

    Every method takes the namespace first; no method may read or write outside it.
    Record values are plain JSON (dicts with an ``id`` key).
    """

    #: The registry name of the store (``memory``, ``sqlite``, ``postgresql`` …).
    name: str = "store"

    #: How a push settles a conflict of a write that carries a ``baseSeq``: the policy per
    #: resource and the ``datafn_resolve_conflict`` hook (the server sets it from
    #: ``[tool.datafn.server.conflicts]``); None: last writer wins, reported.
    conflict_rules: ConflictRules | None = None

    def __init__(self, url: str, schema: Schema, config: Any = None) -> None:
        self.url = url
        self.schema = schema
        self.config = config

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect and create or migrate what is missing (idempotent, never loses data)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Calling it twice is harmless."""

    async def check_ready(self) -> None:
        """Raise when the store cannot serve: its database cannot be reached, or its tables
        are not in place (what the server's ``GET <base>/health`` asks).

        This default reads the change log and the records of every resource in a namespace
        no client can have (it is not printable); stores override it with a cheaper check.
        """
        names = self.schema.resource_names
        await self.latest_seq(HEALTH_NAMESPACE, names)
        await self.counts(HEALTH_NAMESPACE, names)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abc.abstractmethod
    async def apply_push(
        self, namespace: str, client_id: str, mutations: Sequence[PendingMutation]
    ) -> PushOutcome:
        """Apply a batch of mutations atomically, with idempotency.

        In one transaction, holding the namespace's seq lock until it commits: look up the
        idempotency records of ``(namespace, client_id, mutation_id)``, read the records the
        batch touches, let :func:`datafn.server.mutations.plan_push` decide the effects, then
        write the records, the change-log rows, the idempotency records and the counter.

        Conflict detection: the store reads each touched record's last seq with it, and only
        for the keys :func:`datafn.server.mutations.history_wanted` names (a mutation with a
        ``baseSeq`` below that seq) the record's latest change-log rows after that base, at
        most :data:`~datafn.server.mutations.MAX_CONFLICT_HISTORY` + 1 of them, newest first
        (:class:`~datafn.server.mutations.RecordHistory`). Every change-log row keeps its
        :attr:`Change.client_id` and :attr:`Change.conflict`, and pulls answer them.
        """

    @abc.abstractmethod
    async def seed(
        self, namespace: str, data: Mapping[str, Sequence[dict[str, Any]]]
    ) -> dict[str, int]:
        """Insert the records (validated, with ids) that do not exist yet, logging each insert
        as a change, in one transaction; return how many were inserted per resource."""

    @abc.abstractmethod
    async def changes_since(
        self, namespace: str, cursors: Mapping[str, int], limit: int
    ) -> list[Change]:
        """The first ``limit`` changes, in seq order, of the resources in ``cursors`` whose
        seq is above that resource's cursor (a k-way merge of the per-resource logs), read
        from one consistent snapshot."""

    @abc.abstractmethod
    async def clone_page(
        self, namespace: str, resource: str, after_id: str | None, limit: int
    ) -> Sequence[dict[str, Any]]:
        """At most ``limit`` records of ``resource`` with ``id > after_id`` (all when None),
        ordered by id (code-point order, the same in every store): a list of dicts, or a
        :class:`RecordTexts` when the store keeps records as JSON text."""

    @abc.abstractmethod
    async def latest_seq(self, namespace: str, resources: Sequence[str]) -> dict[str, int]:
        """The highest seq in the change log of each resource (0 when it has none)."""

    async def clone_page_at(
        self, namespace: str, resource: str, after_id: str | None, limit: int
    ) -> tuple[int, Sequence[dict[str, Any]]]:
        """``(latest seq of resource, clone page)``, the seq read no later than the records (a
        change the page misses is above it). Stores override it to answer in one round trip;
        this default makes the two calls in that order."""
        seq = (await self.latest_seq(namespace, [resource]))[resource]
        return seq, await self.clone_page(namespace, resource, after_id, limit)

    @abc.abstractmethod
    async def counts(self, namespace: str, resources: Sequence[str]) -> dict[str, int]:
        """How many records each resource holds."""

    async def records_between(
        self,
        namespace: str,
        resource: str,
        after_id: str | None,
        until_id: str | None,
        limit: int,
    ) -> Sequence[dict[str, Any]]:
        """At most ``limit`` records of ``resource`` with ``after_id < id <= until_id`` (None:
        unbounded on that side), ordered by id: what reconcile's digests read. This default
        reads a clone page and cuts it at ``until_id``; stores may answer it directly."""
        rows = await self.clone_page(namespace, resource, after_id, limit)
        if until_id is None or not rows:
            return rows
        ids = rows.ids if isinstance(rows, RecordTexts) else [str(r["id"]) for r in rows]
        if ids[-1] <= until_id:
            return rows
        return rows[: bisect.bisect_right(ids, until_id)]

    async def namespace_seq(self, namespace: str) -> int:
        """The namespace's seq counter (0 for a namespace never written)."""
        seqs = await self.latest_seq(namespace, self.schema.resource_names)
        return max(seqs.values(), default=0)

    # -- retention (docs/server.md, "Retention"), driven by datafn.server.retention -----------
    #
    # A store that implements these sets ``supports_retention``; the defaults keep everything
    # (nothing is deleted, no cursor ever expires).

    #: Whether the store implements the retention methods below.
    supports_retention: bool = False

    async def prune_idempotency(self, before: float, limit: int) -> int:
        """Delete at most ``limit`` idempotency records (of any namespace) written before
        ``before`` (a Unix time), in one short transaction; return how many it deleted."""
        raise NotImplementedError(f"the {self.name} store does not implement retention")

    async def retention_namespaces(self, after: str | None, limit: int) -> list[str]:
        """At most ``limit`` namespaces that were ever written, in code-point order, after
        ``after`` (from the first when None)."""
        raise NotImplementedError(f"the {self.name} store does not implement retention")

    async def mark_horizons(self, namespace: str, now: float, ages: Sequence[float]) -> list[int]:
        """Record that the namespace's seq counter stands where it stands at time ``now``, and
        answer for each age the highest seq recorded at or before ``now - age`` (0 when none):
        every change with that seq or lower is at least that old. Marks older than every age
        needs are deleted, except the newest of them."""
        raise NotImplementedError(f"the {self.name} store does not implement retention")

    async def compact_changes(self, namespace: str, horizon: int, limit: int) -> CompactionStep:
        """Compact the next ``limit`` change-log rows with seq at most ``horizon``, in one
        transaction.

        The store keeps where it stands (the highest seq examined), so successive calls walk
        the log once; for each record it keeps only the latest of its rows up to the walk's
        position, a merge kept that way becoming a ``replace`` with the record as it stood
        (see :func:`datafn.server.retention.plan_compaction`). A client pulling from any
        cursor still reaches the same records: what is removed is always overwritten by a row
        that is kept.
        """
        raise NotImplementedError(f"the {self.name} store does not implement retention")

    async def drop_tombstones(self, namespace: str, horizon: int, limit: int) -> CompactionStep:
        """Drop the next ``limit`` ``delete`` rows with seq at most ``horizon`` that are the
        last change of their record, in one transaction, raising the compaction floor of their
        resource to the highest of them (:meth:`compaction_floors`): that one becomes the
        resource's ``expire`` row (its previous one is deleted), so a pull from a lower cursor
        reads it and is refused, and the resource's latest seq (a clone's cursor) is at least
        the floor. The store keeps where it stands, like :meth:`compact_changes`."""
        raise NotImplementedError(f"the {self.name} store does not implement retention")

    async def compaction_floors(self, namespace: str, resources: Sequence[str]) -> dict[str, int]:
        """The highest seq of a dropped delete per resource (0 when none), where its ``expire``
        row stands: a pull from a lower cursor may miss a delete, and is refused with
        ``CURSOR_EXPIRED``."""
        return dict.fromkeys(resources, 0)
