"""The server's side of the digest form of reconcile (see :mod:`datafn.digest`).

``{clientId, digest: {resource, ranges, parts}}`` answers, per range, its record count and
digest and its parts ``[until, count, hash]``; ``{clientId, fetch: {resource, ranges}}``
answers the records of the ranges, at most ``max-clone-page`` in all (``complete`` is false for
a range the budget ended in or did not reach: the client asks again after its last record).
Both answers carry the resource's latest seq (``cursor``), read before the records.

Ranges of one request are ordered and disjoint, so a request reads each record at most once
(twice for a range without a count hint: once to count it); the store is read page by page,
and the event loop is free between pages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from datafn.digest import (
    RangeReader,
    ReconcileDigestRequest,
    count_range,
    record_fields,
    split_range,
)
from datafn.schema import Schema
from datafn.server.store import RecordTexts, ServerStore

__all__ = ["answer_digest_request"]


def _reader(store: ServerStore, namespace: str, resource: str) -> RangeReader:
    async def read(
        after: str | None, until: str | None, limit: int
    ) -> tuple[Sequence[Mapping[str, Any]], str | None]:
        rows = await store.records_between(namespace, resource, after, until, limit)
        if len(rows) < limit:
            return rows, None
        last = rows.ids[-1] if isinstance(rows, RecordTexts) else str(rows[-1]["id"])
        return rows, last

    return read


async def answer_digest_request(
    store: ServerStore,
    schema: Schema,
    namespace: str,
    request: ReconcileDigestRequest,
    *,
    fetch_limit: int,
) -> dict[str, Any]:
    """The wire result of a validated digest-form reconcile request."""
    resource = request.resource
    spec = schema.resource(resource)
    read = _reader(store, namespace, resource)
    cursor = str((await store.latest_seq(namespace, [resource]))[resource])
    if request.digest is not None:
        digest = request.digest
        answered = []
        for item in digest.ranges:
            if item.after is None and item.until is None:
                count = (await store.counts(namespace, [resource]))[resource]
            elif item.count is not None:
                count = item.count
            else:
                count = await count_range(read, item.after, item.until)
            answer = await split_range(
                read, record_fields(spec), item.after, item.until, count, digest.parts
            )
            answered.append(
                {
                    "after": answer.after,
                    "until": answer.until,
                    "count": answer.count,
                    "hash": answer.hash,
                    "parts": [[p.until, p.count, p.hash] for p in answer.parts],
                }
            )
        return {"ok": True, "digest": {"resource": resource, "cursor": cursor, "ranges": answered}}
    assert request.fetch is not None
    budget = fetch_limit
    fetched = []
    for item in request.fetch.ranges:
        rows: Sequence[Mapping[str, Any]] = []
        complete = False
        if budget > 0:
            rows = await store.records_between(namespace, resource, item.after, item.until, budget)
            complete = len(rows) < budget
            budget -= len(rows)
        fetched.append(
            {"after": item.after, "until": item.until, "records": rows, "complete": complete}
        )
    return {"ok": True, "fetch": {"resource": resource, "cursor": cursor, "ranges": fetched}}
