"""Content digests of a resource over id ranges: what reconcile compares, on both sides.

Counting records per resource misses a record whose content drifted while the count stayed
equal. The digest form of reconcile compares content instead, and narrows a difference down to
a few id ranges in a few round trips, so only those ranges are fetched again:

1. **Record digest**: the first 16 bytes of SHA-256 of the record's canonical form
   (:func:`canonical_record`).
2. **Range digest** of the records with ``after < id <= until`` (``None``: unbounded), in id
   order (Unicode code-point order, the order of every store): the first 16 bytes of SHA-256
   of the concatenated record digests, as 32 lowercase hex characters. An empty range has the
   digest of zero bytes (``e3b0c44298fc1c149afbf4c8996fb924``).
3. **Parts**: the server splits each asked range into at most ``parts`` consecutive parts of
   about equal record counts and answers each part as ``[until, count, hash]``; the parts
   cover the whole range (the first starts at the range's ``after``, each next one after the
   previous ``until``, the last ends at the range's ``until``), so ids that only the client
   holds fall into a part too. The client computes the same parts over its own records and
   asks again for the parts that differ, or fetches them when they are small.

The canonical form (``canonical_record``), precisely, so another implementation computes the
same bytes:

- The record's ``id`` and the fields the schema declares for the resource; any other key
  (metadata a store or a client keeps beside a record) is left out.
- A member whose value is ``null`` is left out, at every depth (a store that keeps one column
  per field gives ``null`` for a field the server never had). ``null`` inside an array stays.
- Objects are written with their keys sorted by Unicode code point; arrays keep their order.
- ``true`` / ``false`` as they are. A number whose value is integral with magnitude at most
  2^53 is written as an integer (``1.0`` → ``1``, ``-0.0`` → ``0``); any other number is
  converted to an IEEE-754 double and written as the shortest decimal that reads back as the
  same double, in ECMAScript's form (``0.1``, ``1.5e-7``, ``1e+300``), except that integral
  values above 2^53 keep the exponent form (``2**60`` → ``1.152921504606847e+18``, where
  ECMAScript writes every digit); this is what orjson writes.
- Strings as JSON strings in UTF-8: only ``"``, ``\\`` and the control characters below U+0020
  are escaped (``\\b \\t \\n \\f \\r``, the others as ``\\u00xx`` with lowercase hex), as
  ``JSON.stringify`` does.
- No whitespace anywhere.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any

import orjson
from pydantic import Field, model_validator

from datafn.protocol import ClientId, Cursor, NonNegativeInt, WireModel
from datafn.schema import ResourceSpec, _PathedValueError

__all__ = [
    "CAPABILITY",
    "DEFAULT_PARTS",
    "EMPTY_DIGEST",
    "FETCH_LEAF",
    "MAX_DIGEST_PARTS",
    "MAX_DIGEST_RANGES",
    "DigestAnswer",
    "DigestPart",
    "DigestRange",
    "DigestRangeAnswer",
    "DigestSpec",
    "FetchAnswer",
    "FetchRangeAnswer",
    "FetchSpec",
    "RangeHasher",
    "ReconcileDigestRequest",
    "ReconcileDigestResult",
    "canonical_record",
    "record_digest",
    "record_fields",
]

#: The capability a server announces in ``status`` when it answers the digest form.
CAPABILITY = "reconcile-digest"

#: Most ranges one digest or fetch request may name.
MAX_DIGEST_RANGES = 64
#: Most parts the server splits one range into.
MAX_DIGEST_PARTS = 64
#: Parts per range the Python client asks for.
DEFAULT_PARTS = 16
#: A differing part holding at most this many server records is fetched, not split again.
FETCH_LEAF = 16

_SAFE_INTEGER = 2**53
EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()[:32]


# --------------------------------------------------------------------------- canonical form


def _normalise(value: Any) -> Any:
    """``value`` with null members dropped and numbers in their canonical kind (see module)."""
    if value is None or value is True or value is False or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if -_SAFE_INTEGER <= value <= _SAFE_INTEGER else float(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) <= _SAFE_INTEGER:
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def record_fields(spec: ResourceSpec) -> frozenset[str]:
    """The keys of a record of ``spec`` that its canonical form includes."""
    return frozenset({"id", *(f.name for f in spec.fields)})


def canonical_record(record: Mapping[str, Any], fields: frozenset[str]) -> bytes:
    """The canonical bytes of ``record`` (see the module), keeping only the keys ``fields``."""
    kept: dict[str, Any] = {}
    for key, value in record.items():
        if value is None or key not in fields:
            continue
        if isinstance(value, str) or value is True or value is False:
            kept[key] = value
        else:
            kept[key] = _normalise(value)
    return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)


def record_digest(record: Mapping[str, Any], fields: frozenset[str]) -> bytes:
    """The 16-byte digest of one record."""
    return hashlib.sha256(canonical_record(record, fields)).digest()[:16]


class RangeHasher:
    """Accumulates the digest of a range, record after record in id order."""

    __slots__ = ("_hash", "count")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.count = 0

    def add(self, digest: bytes) -> None:
        self._hash.update(digest)
        self.count += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()[:32]


# --------------------------------------------------------------------------- wire models


def _check_ranges(ranges: Sequence[DigestRange], field: str) -> None:
    """Ranges are ordered and do not overlap: one request reads each record at most once."""
    for index, item in enumerate(ranges):
        if item.after is not None and item.until is not None and item.after >= item.until:
            raise _PathedValueError("a range needs after < until", (field, index, "until"))
        if index:
            previous = ranges[index - 1].until
            if previous is None or item.after is None or item.after < previous:
                raise _PathedValueError(
                    "ranges must be in id order and must not overlap", (field, index, "after")
                )


class DigestRange(WireModel):
    """The ids ``after < id <= until`` (``None``: unbounded on that side); ``count`` is the
    number of records the previous answer gave for it (a hint for splitting it evenly)."""

    after: Annotated[str, Field(max_length=4096)] | None = None
    until: Annotated[str, Field(max_length=4096)] | None = None
    count: NonNegativeInt | None = None


class DigestSpec(WireModel):
    resource: str
    ranges: list[DigestRange] = Field(min_length=1, max_length=MAX_DIGEST_RANGES)
    parts: int = Field(DEFAULT_PARTS, ge=1, le=MAX_DIGEST_PARTS)

    @model_validator(mode="after")
    def _ordered(self) -> DigestSpec:
        _check_ranges(self.ranges, "ranges")
        return self


class FetchSpec(WireModel):
    resource: str
    ranges: list[DigestRange] = Field(min_length=1, max_length=MAX_DIGEST_RANGES)

    @model_validator(mode="after")
    def _ordered(self) -> FetchSpec:
        _check_ranges(self.ranges, "ranges")
        return self


class ReconcileDigestRequest(WireModel):
    """The digest forms of a reconcile request: ``{clientId, digest: {resource, ranges,
    parts}}`` or ``{clientId, fetch: {resource, ranges}}`` (exactly one of them)."""

    client_id: ClientId
    digest: DigestSpec | None = None
    fetch: FetchSpec | None = None

    @model_validator(mode="after")
    def _one_form(self) -> ReconcileDigestRequest:
        if (self.digest is None) == (self.fetch is None):
            raise _PathedValueError("give exactly one of digest and fetch", ("digest",))
        return self

    @property
    def resource(self) -> str:
        spec = self.digest or self.fetch
        assert spec is not None
        return spec.resource

    @property
    def resources(self) -> list[str]:
        return [self.resource]


class DigestPart(WireModel):
    """One part of an answered range; on the wire ``[until, count, hash]``."""

    until: str | None
    count: NonNegativeInt
    hash: str

    @model_validator(mode="before")
    @classmethod
    def _from_array(cls, data: Any) -> Any:
        if isinstance(data, list):
            if len(data) != 3:
                raise ValueError("a part is [until, count, hash]")
            return {"until": data[0], "count": data[1], "hash": data[2]}
        return data


class DigestRangeAnswer(WireModel):
    after: str | None = None
    until: str | None = None
    count: NonNegativeInt
    hash: str
    parts: list[DigestPart]


class DigestAnswer(WireModel):
    resource: str
    #: the resource's latest seq, read before its records
    cursor: Cursor
    ranges: list[DigestRangeAnswer]


class FetchRangeAnswer(WireModel):
    after: str | None = None
    until: str | None = None
    records: list[dict[str, Any]]
    #: false when the answer's record budget ended before the range did: ask again after the
    #: last record given (after ``after`` when none was)
    complete: bool


class FetchAnswer(WireModel):
    resource: str
    cursor: Cursor
    ranges: list[FetchRangeAnswer]


class ReconcileDigestResult(WireModel):
    digest: DigestAnswer | None = None
    fetch: FetchAnswer | None = None


# --------------------------------------------------------------------------- computing parts

#: Reads the records with ``after < id <= until`` in id order, looking at most at ``limit``
#: stored records: ``(records, last id looked at)``, the id None when the range is exhausted.
RangeReader = Callable[
    [str | None, str | None, int], Awaitable[tuple[Sequence[Mapping[str, Any]], str | None]]
]

#: Records read per store call while digesting.
SCAN_PAGE = 1000


async def scan(
    read: RangeReader, after: str | None, until: str | None, page: int = SCAN_PAGE
) -> AsyncIterator[Sequence[Mapping[str, Any]]]:
    """The records of ``after < id <= until``, page after page."""
    while True:
        rows, last = await read(after, until, page)
        if rows:
            yield rows
        if last is None:
            return
        after = last


async def count_range(read: RangeReader, after: str | None, until: str | None) -> int:
    """How many records ``after < id <= until`` holds (one pass over them)."""
    total = 0
    async for rows in scan(read, after, until):
        total += len(rows)
    return total


async def split_range(
    read: RangeReader,
    fields: frozenset[str],
    after: str | None,
    until: str | None,
    count: int,
    parts: int,
) -> DigestRangeAnswer:
    """The server's answer for one range: its digest and its parts of about ``count / parts``
    records each (the last part takes whatever is left when ``count`` was too low)."""
    size = max(1, math.ceil(count / parts))
    whole = RangeHasher()
    current = RangeHasher()
    answered: list[DigestPart] = []
    last_id: str | None = None
    async for rows in scan(read, after, until):
        for record in rows:
            digest = record_digest(record, fields)
            whole.add(digest)
            if current.count >= size and len(answered) < parts - 1:
                answered.append(
                    DigestPart(until=last_id, count=current.count, hash=current.hexdigest())
                )
                current = RangeHasher()
            current.add(digest)
            last_id = str(record["id"])
    answered.append(DigestPart(until=until, count=current.count, hash=current.hexdigest()))
    return DigestRangeAnswer(
        after=after, until=until, count=whole.count, hash=whole.hexdigest(), parts=answered
    )


async def parts_of(
    read: RangeReader,
    fields: frozenset[str],
    after: str | None,
    boundaries: Sequence[str | None],
) -> list[RangeHasher]:
    """The client's side: digests of its own records over the server's part boundaries
    (``boundaries`` are the parts' ``until``; the last one is the range's)."""
    hashers = [RangeHasher() for _ in boundaries]
    index = 0
    async for rows in scan(read, after, boundaries[-1]):
        for record in rows:
            record_id = str(record["id"])
            while (bound := boundaries[index]) is not None and record_id > bound:
                index += 1
            hashers[index].add(record_digest(record, fields))
    return hashers


def fetch_batches(
    ranges: Iterable[tuple[DigestRange, int]], budget: int
) -> list[list[DigestRange]]:
    """Group ranges (with their server counts) into fetch requests of at most
    ``MAX_DIGEST_RANGES`` ranges and about ``budget`` records each."""
    batches: list[list[DigestRange]] = []
    current: list[DigestRange] = []
    used = 0
    for item, count in ranges:
        if current and (len(current) >= MAX_DIGEST_RANGES or used + count > budget):
            batches.append(current)
            current, used = [], 0
        current.append(item)
        used += count
    if current:
        batches.append(current)
    return batches
