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
import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self, overload

import orjson

from datafn.schema import Schema

__all__ = [
    "Change",
    "ChangeOp",
    "MutationError",
    "PendingMutation",
    "PushOutcome",
    "RecordTexts",
    "ServerStore",
]

#: What a change-log row records: ``insert``/``replace`` carry the full record, ``merge`` the
#: delta (with ``id``), ``delete`` nothing.
ChangeOp = Literal["insert", "merge", "replace", "delete"]


@dataclass(frozen=True, slots=True)
class Change:
    """One row of a namespace's change log."""

    seq: int
    resource: str
    id: str
    op: ChangeOp
    data: dict[str, Any] | None


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

    @property
    def retryable(self) -> bool:
        from datafn.errors import RETRYABLE_CODES

        return self.code in RETRYABLE_CODES


@dataclass(frozen=True, slots=True)
class PendingMutation:
    """A push mutation after validation, as the server hands it to :meth:`ServerStore.apply_push`.

    ``record`` is the validated record (with ``id``; a partial one for ``merge``), ``guard`` the
    ``if`` object. ``error`` is set when validation already failed: the store still looks the
    mutation up in the idempotency records (a replay of an applied mutation stays applied)
    but applies nothing.
    """

    mutation_id: str
    resource: str
    operation: Literal["insert", "merge", "replace", "delete"]
    id: str
    record: dict[str, Any] | None = None
    guard: dict[str, Any] | None = None
    error: MutationError | None = None


@dataclass(slots=True)
class PushOutcome:
    """What one push did.

    ``results`` holds one entry per mutation, in order: ``None`` when it was applied (or is
    an idempotent replay of an applied one), else its error. ``cursor_before`` is the
    namespace's seq when the push took the lock, ``cursor`` the highest seq it allocated
    (``cursor_before`` when none), ``cursors`` the highest seq allocated per resource.
    """

    results: list[MutationError | None]
    cursor_before: int
    cursor: int
    cursors: dict[str, int] = field(default_factory=dict)


class ServerStore(abc.ABC):
    """Base class of every server store; an async context manager (``open`` / ``aclose``).

    Every method takes the namespace first; no method may read or write outside it.
    Record values are plain JSON (dicts with an ``id`` key).
    """

    #: The registry name of the store (``memory``, ``sqlite``, ``postgresql`` …).
    name: str = "store"

    def __init__(self, url: str, schema: Schema, config: Any = None) -> None:
        self.url = url
        self.schema = schema
        self.config = config

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect and create or migrate what is missing (idempotent, never loses data)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Calling it twice is harmless."""

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

    async def namespace_seq(self, namespace: str) -> int:
        """The namespace's seq counter (0 for a namespace never written)."""
        seqs = await self.latest_seq(namespace, self.schema.resource_names)
        return max(seqs.values(), default=0)
