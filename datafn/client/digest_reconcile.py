"""The client's side of the digest form of reconcile (see :mod:`datafn.digest`).

For one resource: ask the server for the digest of the whole id range split in parts, compute
the same parts over the local records (as the server should hold them: a record with queued
writes counts as its base), and ask again for the parts that differ, until a differing part is
small (at most ``FETCH_LEAF`` server records); those parts are fetched and the local records in
them are made equal to the server's (written again when their digest differs, deleted when the
server lacks them), rebased under the queued writes like a pull. Records outside the differing
parts are never transferred.

Every loop is bounded: each answer must split a range into strictly smaller parts (else the
part is fetched), and the requests of one resource are capped (``MAX_REQUESTS``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from datafn.client.store import PullPage
from datafn.digest import (
    DEFAULT_PARTS,
    FETCH_LEAF,
    MAX_DIGEST_RANGES,
    DigestAnswer,
    DigestRange,
    FetchAnswer,
    RangeReader,
    ReconcileDigestResult,
    fetch_batches,
    parts_of,
    record_digest,
    record_fields,
    scan,
)
from datafn.errors import TransportError

if TYPE_CHECKING:
    from datafn.client.engine import SyncEngine
    from datafn.client.reports import ReconcileReport

__all__ = ["MAX_REQUESTS", "reconcile_resource"]

log = logging.getLogger("datafn.sync")

#: Most reconcile requests for one resource (a guard against a server that never converges).
MAX_REQUESTS = 100_000


def _reader(engine: SyncEngine, resource: str) -> RangeReader:
    store = engine.store

    async def read(
        after: str | None, until: str | None, limit: int
    ) -> tuple[Sequence[Mapping[str, Any]], str | None]:
        return await store.synced_records_between(resource, after, until, limit)

    return read


def _order(item: DigestRange) -> tuple[bool, str]:
    """Sort key of disjoint ranges in id order (the unbounded start first)."""
    return (item.after is not None, item.after or "")


def _malformed(message: str) -> TransportError:
    return TransportError(f"the server answered a malformed digest: {message}")


class _Session:
    """One resource's digest reconcile: its requests, what differs, what was repaired."""

    def __init__(self, engine: SyncEngine, resource: str, report: ReconcileReport) -> None:
        self.engine = engine
        self.resource = resource
        self.report = report
        self.fields = record_fields(engine.schema.resource(resource))
        self.read = _reader(engine, resource)
        self.server_cursor = 0

    async def _ask(self, form: str, body: dict[str, Any]) -> ReconcileDigestResult:
        if self.report.requests >= MAX_REQUESTS:
            raise TransportError(
                f"reconcile of {self.resource!r} did not converge in {MAX_REQUESTS} requests"
            )
        self.report.requests += 1
        payload = {"clientId": self.engine.client_id, form: {"resource": self.resource, **body}}
        result: ReconcileDigestResult = await self.engine.request(
            "reconcile", "reconcile", payload, ReconcileDigestResult, resources=[self.resource]
        )
        return result

    async def digest(self, ranges: list[DigestRange]) -> DigestAnswer:
        wire = [r.to_wire() for r in ranges]
        result = await self._ask("digest", {"ranges": wire, "parts": DEFAULT_PARTS})
        answer = result.digest
        if answer is None or len(answer.ranges) != len(ranges):
            raise _malformed("one answered range per asked range expected")
        for asked, got in zip(ranges, answer.ranges, strict=True):
            if (got.after, got.until) != (asked.after, asked.until) or not got.parts:
                raise _malformed("the answered ranges differ from the asked ones")
            if got.parts[-1].until != got.until:
                raise _malformed("the parts do not end where their range does")
            previous = got.after
            for index, part in enumerate(got.parts):
                last = index == len(got.parts) - 1
                if (part.until is None and not last) or (
                    part.until is not None and previous is not None and part.until <= previous
                ):
                    raise _malformed("the parts are not in id order")
                previous = part.until
        self.server_cursor = max(self.server_cursor, int(answer.cursor))
        return answer

    async def differing(self) -> list[tuple[DigestRange, int]]:
        """The small ranges whose content differs, with the server's record count of each."""
        leaves: list[tuple[DigestRange, int]] = []
        queue: deque[DigestRange] = deque([DigestRange()])
        first = True
        while queue:
            batch = [queue.popleft() for _ in range(min(len(queue), MAX_DIGEST_RANGES))]
            # the queue holds disjoint ranges, of two levels at most: a request lists them in
            # id order
            batch.sort(key=_order)
            answer = await self.digest(batch)
            for got in answer.ranges:
                bounds = [part.until for part in got.parts]
                local = await parts_of(self.read, self.fields, got.after, bounds)
                if first:
                    self.report.remote[self.resource] = got.count
                    first = False
                start = got.after
                for part, mine in zip(got.parts, local, strict=True):
                    if part.hash != mine.hexdigest() or part.count != mine.count:
                        item = DigestRange(after=start, until=part.until, count=part.count)
                        if part.count <= FETCH_LEAF or len(got.parts) == 1:
                            leaves.append((item, part.count))
                        else:
                            queue.append(item)
                    start = part.until
        return leaves

    async def repair(self, leaves: list[tuple[DigestRange, int]]) -> None:
        """Fetch the differing ranges and make the local records in them equal the server's."""
        budget = max(1, min(1000, self.engine.config.clone_page_size))
        pending = list(leaves)
        while pending:
            pending.sort(key=lambda item: _order(item[0]))  # disjoint: listed in id order
            again: list[tuple[DigestRange, int]] = []
            for batch in fetch_batches(pending, budget):
                result = await self._ask("fetch", {"ranges": [r.to_wire() for r in batch]})
                answer = result.fetch
                if answer is None or len(answer.ranges) != len(batch):
                    raise _malformed("one fetched range per asked range expected")
                self.server_cursor = max(self.server_cursor, int(answer.cursor))
                for asked, got in zip(batch, answer.ranges, strict=True):
                    rest = await self._apply(asked, got, answer)
                    if rest is not None:
                        again.append((rest, max(0, (asked.count or 0) - len(got.records))))
            pending = again

    async def _apply(self, asked: DigestRange, got: Any, answer: FetchAnswer) -> DigestRange | None:
        """Apply one fetched range; the part of it still to fetch (None when complete)."""
        if (got.after, got.until) != (asked.after, asked.until):
            raise _malformed("the fetched ranges differ from the asked ones")
        records: list[dict[str, Any]] = got.records
        ids = [str(r.get("id")) for r in records]
        if any(not isinstance(r.get("id"), str) for r in records) or any(
            (asked.after is not None and i <= asked.after)
            or (asked.until is not None and i > asked.until)
            or (n and i <= ids[n - 1])
            for n, i in enumerate(ids)
        ):
            raise _malformed("fetched records outside their range or out of order")
        self.report.fetched[self.resource] = self.report.fetched.get(self.resource, 0) + len(
            records
        )
        complete = got.complete or (bool(ids) and ids[-1] == asked.until)
        covered_until = asked.until if complete else (ids[-1] if ids else None)
        rest = None
        if not complete:
            rest = DigestRange(after=ids[-1] if ids else asked.after, until=asked.until)
            if not ids:
                return rest  # nothing of this range came: ask again (a later batch has room)
        local: dict[str, bytes] = {}
        async for rows in scan(self.read, asked.after, covered_until):
            for row in rows:
                local[str(row["id"])] = record_digest(row, self.fields)
        changed = [r for r in records if local.pop(r["id"], None) != record_digest(r, self.fields)]
        gone = list(local)
        if changed or gone:
            await self.engine.store.apply_pull(
                PullPage(records={self.resource: changed}, deleted={self.resource: gone})
            )
            await self.engine.records_changed(
                self.resource,
                origin="remote",
                updated=[r["id"] for r in changed],
                deleted=gone,
            )
            self.report.repaired[self.resource] = (
                self.report.repaired.get(self.resource, 0) + len(changed) + len(gone)
            )
        return rest


async def reconcile_resource(engine: SyncEngine, resource: str, report: ReconcileReport) -> None:
    """Compare one hydrated resource with the server by content and repair what differs.

    When the server's log is ahead of the local cursor (a change was made since the pull
    before), the resource is pulled and compared again, at most twice; then what differs is
    repaired anyway (a later pull applies the newer changes on top, which converges).
    """
    session = _Session(engine, resource, report)
    report.fetched.setdefault(resource, 0)
    report.repaired.setdefault(resource, 0)
    for attempt in range(3):
        leaves = await session.differing()
        if not leaves:
            return
        cursor = (await engine.store.states([resource]))[resource].cursor
        if session.server_cursor <= cursor or attempt == 2:
            break
        await engine.run_phase("pull", resources=[resource])
    log.info("reconcile of %r: %d differing ranges", resource, len(leaves))
    await session.repair(leaves)
