"""Built-in plugin: the default sync phases and lifecycle loop of the client.

Each is the ``trylast`` implementation of its ``datafn_sync_*`` hook, so a plugin replaces a
phase by implementing the hook and returning a result. What each phase guarantees:

- **clone**: pages ordered by id, fetched back to back while the store writes, at most
  ``clone-buffer-pages`` pages ahead; what has arrived is written in one transaction together
  with the clone position, so a restarted clone resumes after the last applied page. The
  cursor of the first answer (where the server's change log stood before the first page)
  becomes the resource's cursor when the clone ends, so the following pull brings every
  change made during the clone.
- **pull**: from the per-resource cursors, ``pull-batch-size`` per request, while ``hasMore``
  and at most ``max-pull-iterations`` requests; an answer that would move a cursor backwards
  is refused (``CONFLICT``) and nothing of it is applied. From a push until a pull has caught
  up, the pages are gathered and applied in one transaction (own acknowledged writes may lie
  above the cursors; see ``OWN_WRITES_UNPULLED``).
- **push**: the changelog in order, ``push-batch-size`` per request, transient failures retried
  with backoff; only the prefix that was applied or refused for good is acknowledged. A push
  never moves a cursor: after one that applied anything the engine pulls (the server's copies
  of the writes come back like any other change), and after one whose ``cursorBefore`` shows
  other writers it pulls too.
- **clone_up**: every local record uploaded as a ``replace`` whose mutation id is derived from
  (client, resource, id, record), so a re-run after a crash applies nothing twice; the
  changelog entries it covered are acknowledged, then the resources are cloned.
- **reconcile**: push and pull first, then compare counts and re-clone what differs.
- **seed**: the server-side seeding call.
- **loop**: ``sync_all`` (cloneUp/clone/pull/push), then the triggers until stopped.

The defaults drive :class:`~datafn.client.engine.SyncEngine`; called with another kind of
engine they return None and leave the phase to the plugin that brought that engine.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Sequence
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from datafn.client.engine import SyncEngine
from datafn.client.reports import (
    CloneProgress,
    CloneReport,
    CloneUpReport,
    PullReport,
    PushReport,
    ReconcileReport,
    RejectedMutation,
)
from datafn.client.store import ChangelogEntry, PullPage, apply_operation
from datafn.errors import (
    Conflict,
    DatafnError,
    ProtocolError,
    TransportError,
    error_from_envelope,
)
from datafn.plugin import hookimpl
from datafn.protocol import (
    CloneResult,
    PullResult,
    PushResult,
    ReconcileResult,
    SeedResult,
    format_cursor,
    parse_cursor,
    parse_envelope,
)
from datafn.schema import canonical_json

log = logging.getLogger("datafn.sync")

# ---------------------------------------------------------------------------------------------
# clone
# ---------------------------------------------------------------------------------------------


async def _fetch_page(engine: SyncEngine, resource: str, after_id: str | None) -> CloneResult:
    payload = {
        "clientId": engine.client_id,
        "tables": [resource],
        "page": {"table": resource, "afterId": after_id, "limit": engine.config.clone_page_size},
    }
    result: CloneResult = await engine.request(
        "clone", "clone", payload, CloneResult, resources=[resource], parse=_clone_page
    )
    if resource not in result.cursors:
        raise ProtocolError(
            f"the clone answer has no cursor for {resource!r}",
            code="TRANSPORT_ERROR",
            path=f"result.cursors.{resource}",
        )
    return result


async def _fetch_pages(
    engine: SyncEngine,
    resource: str,
    after_id: str | None,
    pages: MemoryObjectSendStream[CloneResult | Exception],
) -> None:
    """Fetch page after page into ``pages`` (bounded: it waits while the buffer is full); a
    failure is handed over as the last item, so the writer raises it where it stands."""
    async with pages:
        while True:
            item: CloneResult | Exception
            try:
                item = await _fetch_page(engine, resource, after_id)
            except Exception as exc:
                item = exc
            try:
                await pages.send(item)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # the writer stopped (it failed, and raises its own error)
            if isinstance(item, Exception):
                return
            after_id = (item.next or {}).get(resource)
            if after_id is None:
                return


def _clone_page(body: Any) -> CloneResult:
    """Parse a clone answer without walking every value of every record.

    A page holds up to a thousand records that the server validated when they were written
    and that arrive as JSON; the generic parser's per-value walk would double the client's
    work per record. The envelope, the cursors, ``next`` and each record's ``id`` are checked;
    anything unexpected falls back to the generic parser and its exact error.
    """
    if (
        isinstance(body, dict)
        and body.get("ok") is True
        and isinstance(result := body.get("result"), dict)
        and isinstance(data := result.get("data"), dict)
        and all(_records_with_ids(rows) for rows in data.values())
    ):
        try:
            cursors = {k: format_cursor(parse_cursor(v)) for k, v in result["cursors"].items()}
            nxt = result.get("next")
            if nxt is not None and not all(
                isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in nxt.items()
            ):
                raise ValueError
        except (KeyError, AttributeError, ValueError, DatafnError):
            return _checked_ids(parse_envelope(body, CloneResult))
        return CloneResult.model_construct(
            data=data, cursors=cursors, next=nxt, paginated=result.get("paginated")
        )
    return _checked_ids(parse_envelope(body, CloneResult))


def _records_with_ids(rows: Any) -> bool:
    """Whether ``rows`` is a list of objects that each have a string id (decoded JSON gives
    exact dicts and strs, so the types are compared without a Python step per record)."""
    if not isinstance(rows, list):
        return False
    if not rows:
        return True
    return set(map(type, rows)) == {dict} and set(
        map(type, map(dict.get, rows, itertools.repeat("id")))
    ) == {str}


def _checked_ids(result: CloneResult) -> CloneResult:
    for table, rows in result.data.items():
        for index, row in enumerate(rows):
            if not isinstance(row.get("id"), str):
                raise TransportError(
                    "the server sent a clone record without an id",
                    path=f"result.data.{table}[{index}].id",
                )
    return result


async def _fill_totals(engine: SyncEngine, resources: Sequence[str]) -> None:
    """Server counts as the progress totals; best effort (progress without a total otherwise),
    asked alongside the first pages rather than before them."""
    try:
        result = await engine.request(
            "clone",
            "reconcile",
            {"clientId": engine.client_id, "resources": list(resources)},
            ReconcileResult,
            resources=resources,
        )
    except Exception as exc:  # the clone goes on without totals, whatever went wrong
        log.debug("no server counts for the clone's progress: %s", exc)
        return
    for resource in resources:
        progress = engine.download_progress.get(resource)
        if progress is not None and resource in result.counts:
            progress.total = result.counts[resource]


async def _clone_resource(engine: SyncEngine, resource: str, report: CloneReport) -> None:
    store = engine.store
    state = (await store.states([resource]))[resource]
    # hydrating with no clone cursor: a re-clone is due (reset), none of its pages applied yet
    resuming = state.hydration == "hydrating" and state.clone_cursor is not None
    after_id = state.clone_after_id if resuming else None
    progress = engine.download_progress.setdefault(resource, CloneProgress(resource))
    if resuming:
        progress.done = await store.count(resource)
    first = not resuming
    applied = 0
    failure: BaseException | None = None
    # Pages are fetched back to back into a bounded buffer while the store writes; the writer
    # takes whatever has arrived (at most a buffer's worth) in one transaction.
    most = engine.config.clone_buffer_pages
    send, pages = anyio.create_memory_object_stream[CloneResult | Exception](most)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_fetch_pages, engine, resource, after_id, send)
        try:
            async with pages:
                finished = False
                while not finished:
                    batch = [await pages.receive()]
                    while len(batch) < most:
                        try:
                            batch.append(pages.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    records: list[dict[str, Any]] = []
                    cursor: int | None = None
                    fetched = 0
                    failed: Exception | None = None
                    for item in batch:
                        if isinstance(item, Exception):
                            failed = item  # the pages before it are still written
                            break
                        if cursor is None:
                            cursor = int(item.cursors[resource])
                        records.extend(item.data.get(resource, ()))
                        finished = (item.next or {}).get(resource) is None
                        fetched += 1
                    if fetched:
                        last_id = records[-1]["id"] if records else after_id
                        await store.apply_clone_page(
                            resource,
                            records,
                            after_id=last_id,
                            start_cursor=cursor if first else None,
                            reset=first,
                        )
                        first = False
                        after_id = last_id
                        applied += len(records)
                        progress.done += len(records)
                        report.pages += fetched
                    if failed is not None:
                        raise failed
        except Exception as exc:  # raised below, outside the task group (no ExceptionGroup)
            failure = exc
            tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    await store.finish_clone(resource)
    engine.caught_up = None  # this resource still has to pull from its clone cursor
    progress.finished = True
    if progress.total is None:  # the count did not come (yet): the clone itself tells
        progress.total = progress.done
    report.records[resource] = applied
    report.cursors[resource] = (await store.states([resource]))[resource].cursor


@hookimpl(trylast=True)
async def datafn_sync_clone(engine: SyncEngine, resources: list[str]) -> CloneReport:
    report = CloneReport()
    if not resources:
        return report
    for resource in resources:
        engine.download_progress[resource] = CloneProgress(resource)
    failure: BaseException | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(_fill_totals, engine, resources)
        try:
            for resource in resources:
                await _clone_resource(engine, resource, report)
        except Exception as exc:  # raised below, outside the task group (no ExceptionGroup)
            failure = exc
            tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return report


# ---------------------------------------------------------------------------------------------
# pull
# ---------------------------------------------------------------------------------------------


#: Store metadata set before a push is sent and cleared when a pull has caught up with every
#: resource: while set, the server may hold this client's own acknowledged writes above the
#: cursors, and a pull applies its pages in one transaction.
OWN_WRITES_UNPULLED = "own_writes_unpulled"


class PullPageMerger:
    """Folds pull pages, as they arrive, into one page with the effect of applying them in
    order (later pages win; merged deltas fold into the record or delta before them; the
    highest cursor per resource). Memory grows with the records touched, not the pages."""

    def __init__(self) -> None:
        self._state: dict[str, dict[str, tuple[str, dict[str, Any] | None]]] = {}
        self._cursors: dict[str, int] = {}

    def add(self, page: PullPage) -> None:
        for resource, rows in page.records.items():
            table = self._state.setdefault(resource, {})
            for record in rows:
                table[record["id"]] = ("record", record)
        for resource, deltas in page.merged.items():
            table = self._state.setdefault(resource, {})
            for delta in deltas:
                kind, before = table.get(delta["id"], ("none", None))
                if kind == "merged" and before is not None:
                    table[delta["id"]] = ("merged", {**before, **delta})
                elif kind == "none":
                    table[delta["id"]] = ("merged", delta)
                else:  # a full record, or a delete: the merge makes a full record
                    table[delta["id"]] = (
                        "record",
                        apply_operation(before, "merge", delta["id"], delta),
                    )
        for resource, ids in page.deleted.items():
            table = self._state.setdefault(resource, {})
            for record_id in ids:
                table[record_id] = ("deleted", None)
        for resource, cursor in page.cursors.items():
            self._cursors[resource] = max(cursor, self._cursors.get(resource, cursor))

    def page(self) -> PullPage:
        full: dict[str, list[dict[str, Any]]] = {}
        merged: dict[str, list[dict[str, Any]]] = {}
        deleted: dict[str, list[str]] = {}
        for resource, table in self._state.items():
            for record_id, (kind, body) in table.items():
                if body is None:
                    deleted.setdefault(resource, []).append(record_id)
                else:
                    (merged if kind == "merged" else full).setdefault(resource, []).append(body)
        return PullPage(records=full, merged=merged, deleted=deleted, cursors=dict(self._cursors))


def merge_pull_pages(pages: Sequence[PullPage]) -> PullPage:
    """One page with the effect of applying ``pages`` in order (see :class:`PullPageMerger`)."""
    merger = PullPageMerger()
    for page in pages:
        merger.add(page)
    return merger.page()


#: While own writes may lie above the cursors, a pull goes on past ``max-pull-iterations``
#: until it has caught up (applying part of the way could show older states of them), up to
#: this many times ``max-pull-iterations`` requests.
CATCH_UP_FACTOR = 100


@hookimpl(trylast=True)
async def datafn_sync_pull(engine: SyncEngine, resources: list[str]) -> PullReport:
    report = PullReport()
    store = engine.store
    states = await store.states(resources)
    cursors = {r: s.cursor for r, s in states.items() if s.hydration == "ready"}
    if not cursors:
        return report
    # After a push, the server may hold our own acknowledged writes above the cursors: applying
    # its pages one by one would show older states of those records in between (and keep
    # them after a crash), so the pages are folded together as they arrive and applied in one
    # transaction once the pull has caught up.
    whole = await store.get_meta(OWN_WRITES_UNPULLED) == "1"
    merger = PullPageMerger() if whole else None
    most = engine.config.max_pull_iterations * (CATCH_UP_FACTOR if whole else 1)
    for _ in range(most):
        payload = {
            "clientId": engine.client_id,
            "cursors": {r: format_cursor(c) for r, c in cursors.items()},
            "limit": engine.config.pull_batch_size,
        }
        result = await engine.request("pull", "pull", payload, PullResult, resources=list(cursors))
        report.requests += 1
        moved: dict[str, int] = {}
        for resource, value in result.cursors.items():
            if resource not in cursors:
                continue
            n = int(value)
            if n < cursors[resource]:
                raise Conflict(
                    f"the server moved the cursor of {resource!r} backwards "
                    f"({cursors[resource]} → {n}); nothing of this answer was applied",
                    path=f"cursors.{resource}",
                )
            moved[resource] = n
        page = PullPage(
            records={r: v for r, v in result.records.items() if r in cursors},
            merged={r: v for r, v in result.merged.items() if r in cursors},
            deleted={r: v for r, v in result.deleted.items() if r in cursors},
            cursors=moved,
        )
        if merger is not None:
            merger.add(page)
        else:
            await store.apply_pull(page)
        report.changes += sum(
            len(v) for part in (page.records, page.merged, page.deleted) for v in part.values()
        )
        cursors.update(moved)
        if not result.has_more:
            break
    else:
        report.has_more = True
        if merger is not None:
            log.warning(
                "the pull after a push did not catch up in %d requests; applying what it has",
                most,
            )
    if merger is not None and report.requests:
        await store.apply_pull(merger.page())
    report.cursors = dict(cursors)
    every_ready = [
        r for r, s in (await store.states(engine.resources)).items() if s.hydration == "ready"
    ]
    if not report.has_more and set(cursors) >= set(every_ready):
        engine.caught_up = max(cursors.values())
        if whole:
            await store.set_meta(OWN_WRITES_UNPULLED, "0")
    return report


# ---------------------------------------------------------------------------------------------
# push
# ---------------------------------------------------------------------------------------------


def _server_error(error: Any) -> ProtocolError:
    return error_from_envelope(
        {"code": error.code, "message": error.message, "details": {"path": error.path}}
    )


async def _settle(
    engine: SyncEngine,
    entries: Sequence[ChangelogEntry],
    result: PushResult,
    rejected: list[RejectedMutation],
) -> tuple[list[int], ProtocolError | None]:
    """The acknowledged prefix of ``entries``, and the retryable error that ended it."""
    applied = set(result.applied)
    errors = {e.mutation_id: e for e in result.errors}
    done: list[int] = []
    for entry in entries:
        if entry.mutation_id in applied:
            done.append(entry.seq)
            continue
        error = errors.get(entry.mutation_id)
        if error is None:
            return done, ProtocolError(
                f"the server did not report mutation {entry.mutation_id!r}",
                code="MUTATION_FAILED",
            )
        if error.retryable:
            return done, _server_error(error)
        done.append(entry.seq)
        failure = _server_error(error)
        rejected.append(
            RejectedMutation(
                entry.mutation_id, entry.resource, entry.record_id, entry.operation, failure
            )
        )
        await engine.events.emit(
            "mutation_rejected",
            resource=entry.resource,
            record_id=entry.record_id,
            operation=entry.operation,
            mutation_id=entry.mutation_id,
            error=failure,
        )
    return done, None


async def _push_batch(engine: SyncEngine, report: PushReport) -> bool:
    """Push the oldest batch; False when the changelog is empty."""
    entries = await engine.store.changelog(limit=engine.config.push_batch_size)
    if not entries:
        return False
    payload = {
        "clientId": engine.client_id,
        "mutations": [e.to_mutation(engine.client_id) for e in entries],
    }
    resources = sorted({e.resource for e in entries})
    if await engine.store.get_meta(OWN_WRITES_UNPULLED) != "1":  # before anything can apply
        await engine.store.set_meta(OWN_WRITES_UNPULLED, "1")
    result = await engine.request("push", "push", payload, PushResult, resources=resources)
    report.batches += 1
    report.cursor = max(report.cursor, int(result.cursor))
    rejected: list[RejectedMutation] = []
    done, stop = await _settle(engine, entries, result, rejected)
    await engine.store.acknowledge(done)
    report.applied += len(done) - len(rejected)
    report.rejected.extend(rejected)
    for resource in {r.resource for r in rejected}:
        # The local copy holds a write the server refused: fetch the server's truth again.
        await engine.store.reset_hydration(resource)
    # The cursors do not move here: the server's copy of these writes may differ from the
    # local one (defaults of a merge that created a record, payloads replaced by policy
    # plugins on either side), so they come back through a pull like any other change.
    if engine.caught_up is None or int(result.cursor_before) != engine.caught_up:
        report.foreign_changes = True
    engine.caught_up = int(result.cursor)
    if stop is not None:
        raise stop
    return True


@hookimpl(trylast=True)
async def datafn_sync_push(engine: SyncEngine) -> PushReport:
    report = PushReport()
    while await engine.retrying("push", lambda: _push_batch(engine, report)):
        pass
    if report.rejected:
        recloned = [
            r
            for r, s in (await engine.store.states(engine.resources)).items()
            if s.hydration != "ready"
        ]
        if recloned:
            await engine.run_phase("clone", resources=recloned)
    return report


# ---------------------------------------------------------------------------------------------
# clone_up
# ---------------------------------------------------------------------------------------------


def clone_up_mutation_id(client_id: str, resource: str, record: dict[str, Any]) -> str:
    """The deterministic mutation id of one uploaded record."""
    digest = hashlib.sha256(canonical_json([client_id, resource, record])).hexdigest()
    return f"cloneup:{digest[:40]}"


async def _clone_up_resource(engine: SyncEngine, resource: str, report: CloneUpReport) -> None:
    store = engine.store
    version = engine.schema.resource(resource).version
    covered: dict[str, list[int]] = {}
    for entry in await store.changelog(resource=resource):
        covered.setdefault(entry.record_id, []).append(entry.seq)
    after_id: str | None = None
    uploaded = 0
    while True:
        records = await store.records_after(resource, after_id, engine.config.push_batch_size)
        if not records:
            break
        mutations = [
            {
                "resource": resource,
                "version": version,
                "operation": "replace",
                "id": record["id"],
                "record": record,
                "clientId": engine.client_id,
                "mutationId": clone_up_mutation_id(engine.client_id, resource, record),
            }
            for record in records
        ]
        payload = {"clientId": engine.client_id, "mutations": mutations}

        async def send(payload: dict[str, Any] = payload) -> None:
            result = await engine.request(
                "clone_up", "push", payload, PushResult, resources=[resource]
            )
            applied = set(result.applied)
            for error in result.errors:
                if error.retryable:
                    raise _server_error(error)
            by_mutation = {m["mutationId"]: m["id"] for m in payload["mutations"]}
            for error in result.errors:
                record_id = by_mutation.get(error.mutation_id, "")
                failure = _server_error(error)
                report.rejected.append(
                    RejectedMutation(error.mutation_id, resource, record_id, "replace", failure)
                )
                await engine.events.emit(
                    "mutation_rejected",
                    resource=resource,
                    record_id=record_id,
                    operation="replace",
                    mutation_id=error.mutation_id,
                    error=failure,
                )
            report.uploaded[resource] = report.uploaded.get(resource, 0) + len(applied)

        await engine.retrying("clone_up", send)
        acked = [seq for r in records for seq in covered.pop(r["id"], ())]
        await store.acknowledge(acked)
        uploaded += len(records)
        after_id = records[-1]["id"]


@hookimpl(trylast=True)
async def datafn_sync_clone_up(engine: SyncEngine, resources: list[str]) -> CloneUpReport:
    report = CloneUpReport()
    for resource in resources:
        await _clone_up_resource(engine, resource, report)
    if resources:
        for resource in resources:
            await engine.store.reset_hydration(resource)
        await engine.run_phase("clone", resources=resources)
    return report


# ---------------------------------------------------------------------------------------------
# reconcile, seed, loop
# ---------------------------------------------------------------------------------------------


@hookimpl(trylast=True)
async def datafn_sync_reconcile(engine: SyncEngine, resources: list[str]) -> ReconcileReport:
    report = ReconcileReport()
    if await engine.store.pending_count():
        await engine.push_unlocked()
    await engine.run_phase("pull", resources=resources)
    result = await engine.request(
        "reconcile",
        "reconcile",
        {"clientId": engine.client_id, "resources": list(resources)},
        ReconcileResult,
        resources=resources,
    )
    for resource in resources:
        report.local[resource] = await engine.store.count(resource)
        report.remote[resource] = result.counts.get(resource, 0)
    report.recloned = [r for r in resources if report.local[r] != report.remote[r]]
    if report.recloned:
        for resource in report.recloned:
            await engine.store.reset_hydration(resource)
        await engine.run_phase("clone", resources=report.recloned)
    return report


@hookimpl(trylast=True)
async def datafn_sync_seed(engine: SyncEngine, data: dict[str, list[dict[str, Any]]]) -> SeedResult:
    return await engine.request("seed", "seed", {"data": data}, SeedResult, resources=list(data))


@hookimpl(trylast=True)
async def datafn_sync_loop(engine: SyncEngine) -> bool:
    await engine.quietly(engine.start_lifecycle)
    await engine.run_triggers()
    return True
