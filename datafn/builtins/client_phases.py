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
  above the cursors; see ``OWN_WRITES_UNPULLED``). A ``CURSOR_EXPIRED`` answer (the server
  compacted away a change the cursor needs) re-clones the resources it names by itself: they
  are marked for a clone, the queued writes are pushed (they stay queued until the server has
  them, and the clone rebases whatever is still queued), the resources are cloned, and the
  pull goes on.
- **push**: the changelog in order, ``push-batch-size`` per request, transient failures retried
  with backoff. Every write with a final outcome leaves the queue (applied: acknowledged;
  refused: taken out of the local view); retryable failures stay queued in order. A whole
  batch refused for its content (a policy's veto, a ``DFQL_*`` answer) is sent write by write
  and the writes refused alone become dead letters, so one bad write never blocks the queue.
  Before a push is sent the store records that its outcome is in doubt; until an answer
  arrives no server data is applied (pulls and clones push first), so a write the server
  applied without the client hearing of it is never applied twice locally. A push never
  moves a cursor: after one that applied anything the engine pulls (the server's copies of
  the writes come back like any other change), and after one whose ``cursorBefore`` shows
  other writers it pulls too.
- **clone_up**: for resources never synced that hold local data. Records no queued write
  accounts for are uploaded as ``insert`` with a mutation id derived from (client, resource,
  record), so a re-run after a crash applies nothing twice and no other client's data is
  overwritten; then the queued writes are pushed as themselves (own mutation ids and guards),
  then the resources are cloned. A resource one of whose writes may have reached the server
  is never cloned up again: it is marked for a clone before that push is sent.
- **reconcile**: push and pull first, then compare with the server: by content over id ranges
  when the server announces ``reconcile-digest`` (only the differing ranges are fetched and
  repaired, see :mod:`datafn.client.digest_reconcile`), else by counts, re-cloning what differs.
- **seed**: the server-side seeding call.
- **loop**: ``sync_all`` (cloneUp/clone/pull/push), then the triggers until stopped.

The defaults drive :class:`~datafn.client.engine.SyncEngine`; called with another kind of
engine they return None and leave the phase to the plugin that brought that engine.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from datafn.client.digest_reconcile import reconcile_resource
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
from datafn.digest import CAPABILITY as DIGEST_CAPABILITY
from datafn.errors import (
    VALIDATION_CODES,
    Conflict,
    CursorExpired,
    DatafnError,
    ProtocolError,
    SyncVetoed,
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
                        await engine.records_changed(
                            resource,
                            origin="remote",
                            updated=[r["id"] for r in records],
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


async def _announce_page(engine: SyncEngine, page: PullPage) -> None:
    """``records_changed`` for what a pull page changed, per resource."""
    for resource in {*page.records, *page.merged, *page.deleted}:
        await engine.records_changed(
            resource,
            origin="remote",
            updated=[r["id"] for r in page.records.get(resource, ())]
            + [r["id"] for r in page.merged.get(resource, ())],
            deleted=list(page.deleted.get(resource, ())),
        )


#: Re-clones one pull makes for ``CURSOR_EXPIRED`` before it gives up with that error.
MAX_EXPIRED_RECLONES = 2


@hookimpl(trylast=True)
async def datafn_sync_pull(engine: SyncEngine, resources: list[str]) -> PullReport:
    for attempt in itertools.count():
        try:
            return await _pull(engine, resources)
        except CursorExpired as exc:
            if attempt >= MAX_EXPIRED_RECLONES:
                raise
            await _reclone_expired(engine, resources, exc)
    raise AssertionError("unreachable")  # pragma: no cover


async def _reclone_expired(engine: SyncEngine, resources: list[str], exc: CursorExpired) -> None:
    """What a pull does when the server answers ``CURSOR_EXPIRED``: mark the resources it
    names for a clone (a pull no longer reads them, and a failure below leaves them for the
    next sync's clone), push the queued writes, clone those resources."""
    named = exc.details.get("resources")
    expired = [r for r in resources if isinstance(named, list) and r in named] or list(resources)
    log.warning(
        "the server no longer keeps the changes after the cursors of %s (CURSOR_EXPIRED): "
        "cloning again; queued writes are kept and pushed",
        ", ".join(expired),
    )
    for resource in expired:
        await engine.store.reset_hydration(resource)
    if await engine.store.pending_count():
        await engine.run_phase("push")
    await engine.run_phase("clone", resources=expired)


async def _pull(engine: SyncEngine, resources: list[str]) -> PullReport:
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
    overwritten: list[dict[str, Any]] = []
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
        if result.conflicts:
            overwritten.extend(_overwritten(engine, result))
        if merger is not None:
            merger.add(page)
        else:
            await store.apply_pull(page)
            await _announce_page(engine, page)
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
        folded = merger.page()
        await store.apply_pull(folded)
        await _announce_page(engine, folded)
    for context in overwritten:  # once the pulled changes are applied
        await _conflict_event(engine, **context)
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
    details = getattr(error, "details", None) or {}
    return error_from_envelope(
        {"code": error.code, "message": error.message, "details": {**details, "path": error.path}}
    )


def _is_base_conflict(error: Any) -> bool:
    """A write refused because the record changed after its ``baseSeq`` (the ``reject``
    conflict policy): it becomes a dead letter, never lost, for the app to merge."""
    details = getattr(error, "details", None)
    return error.code == "CONFLICT" and isinstance(details, dict) and "baseSeq" in details


def _values(record: Mapping[str, Any] | None, fields: Sequence[str]) -> dict[str, Any] | None:
    if record is None:
        return None
    return {name: record.get(name) for name in fields if name in record}


def _overwritten(engine: SyncEngine, result: PullResult) -> list[dict[str, Any]]:
    """The ``conflict`` events (role ``overwritten``) of a pull answer: its changes that
    overwrote a change of this client it had not seen."""
    out = []
    for item in result.conflicts or ():
        conflict = item.get("conflict")
        if not isinstance(conflict, dict) or conflict.get("clientId") != engine.client_id:
            continue
        resource, record_id = str(item.get("resource")), str(item.get("id"))
        fields = [str(f) for f in conflict.get("fields") or ()]
        pulled = next(
            (
                row
                for part in (result.records, result.merged)
                for row in part.get(resource, ())
                if row.get("id") == record_id
            ),
            None,
        )
        previous = conflict.get("previous")
        out.append(
            {
                "role": "overwritten",
                "resource": resource,
                "record_id": record_id,
                "fields": tuple(fields),
                "ours": previous if isinstance(previous, dict) else None,
                "theirs": _values(pulled, fields),
                "base_seq": conflict.get("baseSeq"),
                "overwritten_seq": conflict.get("seq"),
                "winning_seq": item.get("seq"),
                "winner_client_id": item.get("clientId"),
                "other_client_id": engine.client_id,
                "resolution": conflict.get("resolution"),
            }
        )
    return out


async def _conflict_event(engine: SyncEngine, **context: Any) -> None:
    """Emit ``conflict`` (docs/concepts.md, "Conflicts")."""
    await engine.events.emit("conflict", **context)


async def _push_conflicts(
    engine: SyncEngine, entries: Sequence[ChangelogEntry], result: PushResult
) -> None:
    """``conflict`` (role ``overwrote``) for each write of ours the server applied over a
    change we had not seen."""
    by_mid = {e.mutation_id: e for e in entries}
    for item in result.conflicts or ():
        entry = by_mid.get(str(item.get("mutationId")))
        conflict = item.get("conflict")
        if entry is None or not isinstance(conflict, dict):
            continue
        fields = [str(f) for f in conflict.get("fields") or ()]
        previous = conflict.get("previous")
        await _conflict_event(
            engine,
            role="overwrote",
            resource=entry.resource,
            record_id=entry.record_id,
            operation=entry.operation,
            mutation_id=entry.mutation_id,
            fields=tuple(fields),
            ours=_values(entry.record, fields),
            theirs=previous if isinstance(previous, dict) else None,
            base_seq=conflict.get("baseSeq"),
            overwritten_seq=conflict.get("seq"),
            winning_seq=conflict.get("winningSeq"),
            winner_client_id=engine.client_id,
            other_client_id=conflict.get("clientId"),
            resolution=conflict.get("resolution"),
        )


def _describe_error(error: BaseException) -> str:
    code = getattr(error, "code", type(error).__name__)
    return f"{code}: {error}"


#: Codes of a whole push refused for what its mutations hold (not for who sent it, nor for
#: the server's state): the batch is split to find the write at fault, which becomes a dead
#: letter instead of blocking every write behind it.
_CONTENT_CODES = VALIDATION_CODES

#: Refusals that a change of the server's schema would explain.
_SCHEMA_CODES = VALIDATION_CODES - {"DFQL_UNSUPPORTED", "LIMIT_EXCEEDED"}


async def _settle(
    engine: SyncEngine,
    entries: Sequence[ChangelogEntry],
    result: PushResult,
    rejected: list[RejectedMutation],
    report: PushReport | None = None,
) -> ProtocolError | None:
    """Apply a push answer to the queue; return the retryable error that stops the push.

    Every write with a final outcome leaves the queue, in any position: applied ones are
    acknowledged, refused ones are taken out of the local view (their records go back to the
    server's last known state with the other queued writes on top). Writes that failed with a
    retryable error stay queued in order and are sent again; writes the answer does not
    mention stay in doubt (they may have been applied). A write refused because the record
    changed after its ``baseSeq`` (the ``reject`` conflict policy) becomes a dead letter (in
    ``report.dead``) and emits ``conflict`` with the current record: it is never lost.
    """
    applied = set(result.applied)
    errors = {e.mutation_id: e for e in result.errors}
    done: list[int] = []
    refused: list[ChangelogEntry] = []
    conflicted: list[tuple[ChangelogEntry, Any]] = []
    kept: list[int] = []
    stop: ProtocolError | None = None
    unreported = False
    for entry in entries:
        if entry.mutation_id in applied:
            done.append(entry.seq)
            continue
        error = errors.get(entry.mutation_id)
        if error is None:
            unreported = True
            kept.append(entry.seq)
            stop = stop or ProtocolError(
                f"the server did not report mutation {entry.mutation_id!r}",
                code="MUTATION_FAILED",
            )
            continue
        if error.retryable:
            kept.append(entry.seq)
            stop = stop or _server_error(error)
            continue
        if _is_base_conflict(error):
            conflicted.append((entry, error))
            continue
        refused.append(entry)
        failure = _server_error(error)
        rejected.append(
            RejectedMutation(
                entry.mutation_id, entry.resource, entry.record_id, entry.operation, failure
            )
        )
    store = engine.store
    await store.acknowledge(done)
    if kept:
        await store.record_attempt(kept, _describe_error(stop) if stop is not None else None)
    if not unreported:
        await engine.set_in_doubt(False)
    if any(item.error.code in _SCHEMA_CODES for item in rejected):
        # refused as invalid: if the server's schema changed, the writes wait for a migration
        # instead of being dropped (SchemaMismatch leaves them queued)
        engine._schema_checked = False
        await engine.check_schema()
    unknown = await store.reject([e.seq for e in refused]) if refused else set()
    for resource in unknown:  # written by an older store: the server's truth comes by clone
        await store.reset_hydration(resource)
    for entry in refused:  # taken out of the local view
        await engine.records_changed(entry.resource, origin="remote", updated=[entry.record_id])
    for item in rejected[len(rejected) - len(refused) :]:
        await engine.write_event("mutation_rejected", item, error=item.error)
    for entry, error in conflicted:
        failure = _server_error(error)
        await _dead_letter(engine, report or PushReport(), entry, failure)
        details = failure.details
        fields = [str(f) for f in details.get("fields") or ()]
        current = details.get("current")
        await _conflict_event(
            engine,
            role="rejected",
            resource=entry.resource,
            record_id=entry.record_id,
            operation=entry.operation,
            mutation_id=entry.mutation_id,
            fields=tuple(fields),
            ours=_values(entry.record, fields),
            theirs=_values(current if isinstance(current, dict) else None, fields),
            current=current if isinstance(current, dict) else None,
            base_seq=details.get("baseSeq"),
            overwritten_seq=None,
            winning_seq=details.get("seq"),
            winner_client_id=details.get("clientId"),
            other_client_id=details.get("clientId"),
            resolution="reject",
            error=failure,
        )
    return stop


async def _before_send(engine: SyncEngine, resources: Sequence[str]) -> None:
    """What must be durable before a push may reach the server."""
    store = engine.store
    fresh = [r for r in resources if r not in engine._started]
    if fresh:
        # Once a write of a resource that was never hydrated may be on the server, its local
        # records must come from a clone: cloneUp would upload them a second time.
        for resource, state in (await store.states(fresh)).items():
            if state.hydration == "notStarted":
                # records no queued write accounts for (an import, an older version) would
                # be cleared by that clone: they go up first, as cloneUp sends them
                if (await store.unsynced_records(resource, None, 1))[0]:
                    await _clone_up_resource(engine, resource, CloneUpReport())
                await store.reset_hydration(resource)
            engine._started.add(resource)
    if await store.get_meta(OWN_WRITES_UNPULLED) != "1":
        await store.set_meta(OWN_WRITES_UNPULLED, "1")
    await engine.set_in_doubt(True)


class _Refused(Exception):
    """A whole push request was refused before anything of it was applied."""

    def __init__(self, error: DatafnError) -> None:
        super().__init__(str(error))
        self.error = error


#: Refusals of a write on its own that never make it a dead letter: the server also answers
#: them to requests that are too many or too slow (rate limit, read timeout), not only to
#: content it cannot take, so the write stays queued and is sent again later.
_NOT_FINAL = frozenset({"LIMIT_EXCEEDED"})


def _refusal_code(error: DatafnError) -> str | None:
    """The code of a refusal: the server's, or the one a policy's veto carries."""
    if isinstance(error, SyncVetoed):
        return error.veto.code if error.veto is not None else None
    return error.code if isinstance(error, ProtocolError) else None


def _refuses_content(error: DatafnError) -> bool:
    """Whether a refusal is about what the writes hold (so one of them is at fault)."""
    return _refusal_code(error) in _CONTENT_CODES - _NOT_FINAL


async def _push_batch(engine: SyncEngine, report: PushReport) -> bool:
    """Push the oldest batch; False when the queue is empty."""
    entries = await engine.store.changelog(limit=engine.config.push_batch_size)
    if not entries:
        await engine.settle_doubt()
        return False
    try:
        await _push_entries(engine, report, entries)
    except _Refused as refused:
        await _isolate(engine, report, entries, refused.error)
    return True


async def _push_entries(
    engine: SyncEngine, report: PushReport, entries: Sequence[ChangelogEntry]
) -> None:
    payload = {
        "clientId": engine.client_id,
        "mutations": [e.to_mutation(engine.client_id) for e in entries],
    }
    resources = sorted({e.resource for e in entries})

    async def before_send(_payload: Any) -> None:
        await _before_send(engine, resources)

    try:
        result = await engine.request(
            "push", "push", payload, PushResult, resources=resources, on_send=before_send
        )
    except SyncVetoed as exc:
        raise _Refused(exc) from exc
    except ProtocolError as exc:
        if not isinstance(exc, TransportError):
            # an error envelope came: the server committed nothing of this request (a store
            # failure rolls the whole push back)
            await engine.set_in_doubt(False)
        if exc.code in _CONTENT_CODES:
            raise _Refused(exc) from exc
        await engine.store.record_attempt([e.seq for e in entries], _describe_error(exc))
        raise
    report.batches += 1
    report.cursor = max(report.cursor, int(result.cursor))
    rejected: list[RejectedMutation] = []
    stop = await _settle(engine, entries, result, rejected, report)
    await _push_conflicts(engine, entries, result)
    report.applied += len(result.applied)
    report.rejected.extend(rejected)
    # The cursors do not move here: the server's copy of these writes may differ from the
    # local one (defaults of a merge that created a record, payloads replaced by policy
    # plugins on either side), so they come back through a pull like any other change.
    if engine.caught_up is None or int(result.cursor_before) != engine.caught_up:
        report.foreign_changes = True
    engine.caught_up = int(result.cursor)
    if stop is not None:
        raise stop


async def _isolate(
    engine: SyncEngine,
    report: PushReport,
    entries: Sequence[ChangelogEntry],
    error: DatafnError,
) -> None:
    """A whole batch was refused (a policy's veto, or the server refusing what it holds):
    send its writes one by one. A write refused alone becomes a dead letter when the refusal
    is about its content, or when other writes of the batch went through alone; otherwise the
    refusal is about pushing as such (a policy that freezes pushes) and every write stays
    queued. One bad write never blocks the writes behind it."""
    refused: list[tuple[ChangelogEntry, DatafnError]] = []
    passed = False
    if len(entries) == 1:
        refused.append((entries[0], error))
    else:
        for entry in entries:
            try:
                await _push_entries(engine, report, [entry])
            except _Refused as alone:
                if _not_final(alone.error):
                    raise alone.error from None  # throttled or slow: sent again later
                refused.append((entry, alone.error))
            else:
                passed = True
    # a policy's veto of a write alone, when others passed alone, is about that write; a
    # server's refusal only when it is about the write's content
    dead = [
        (e, err)
        for e, err in refused
        if _refuses_content(err) or (passed and isinstance(err, SyncVetoed))
    ]
    for entry, reason in dead:
        await _dead_letter(engine, report, entry, reason)
    if not dead and not passed:
        raise error


def _not_final(error: DatafnError) -> bool:
    return _refusal_code(error) in _NOT_FINAL


async def _dead_letter(
    engine: SyncEngine, report: PushReport, entry: ChangelogEntry, error: DatafnError
) -> None:
    unknown = await engine.store.dead_letter([entry.seq], _describe_error(error))
    for resource in unknown:
        await engine.store.reset_hydration(resource)
    await engine.records_changed(entry.resource, origin="local", updated=[entry.record_id])
    report.dead.append(
        RejectedMutation(entry.mutation_id, entry.resource, entry.record_id, entry.operation, error)
    )
    log.warning(
        "write %s (%s %s:%s) can never be sent and became a dead letter: %s",
        entry.mutation_id,
        entry.operation,
        entry.resource,
        entry.record_id,
        error,
    )
    await engine.write_event("mutation_rejected", entry, error=error)


@hookimpl(trylast=True)
async def datafn_sync_push(engine: SyncEngine) -> PushReport:
    report = PushReport()
    while await engine.retrying("push", lambda: _push_batch(engine, report)):
        pass
    if report.rejected or report.dead:
        # records of a store that predates bases are restored by a clone
        states = await engine.store.states(engine.resources)
        recloned = [r for r, s in states.items() if s.hydration == "hydrating"]
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
    """Upload the records no queued write accounts for (data put into the local store by
    other means than the client's writes, or the state such a record had before a queued
    write), each as an ``insert`` with a mutation id derived from its content: a re-run after a
    crash applies nothing twice, and no other client's data is overwritten."""
    store = engine.store
    version = engine.schema.resource(resource).version
    after_id: str | None = None
    while True:
        records, after_id = await store.unsynced_records(
            resource, after_id, engine.config.push_batch_size
        )
        if records:
            await _upload(engine, resource, version, records, report)
        if after_id is None:
            break


async def _upload(
    engine: SyncEngine,
    resource: str,
    version: int,
    records: list[dict[str, Any]],
    report: CloneUpReport,
) -> None:
    mutations = [
        {
            "resource": resource,
            "version": version,
            "operation": "insert",
            "id": record["id"],
            "record": record,
            "clientId": engine.client_id,
            "mutationId": clone_up_mutation_id(engine.client_id, resource, record),
        }
        for record in records
    ]
    payload = {"clientId": engine.client_id, "mutations": mutations}

    async def send() -> None:
        result = await engine.request("clone_up", "push", payload, PushResult, resources=[resource])
        for error in result.errors:
            if error.retryable:
                raise _server_error(error)
        by_mutation = {m["mutationId"]: m["id"] for m in mutations}
        for error in result.errors:
            record_id = by_mutation.get(error.mutation_id, "")
            failure = _server_error(error)
            refused = RejectedMutation(error.mutation_id, resource, record_id, "insert", failure)
            report.rejected.append(refused)
            await engine.write_event("mutation_rejected", refused, error=failure)
        report.uploaded[resource] = report.uploaded.get(resource, 0) + len(result.applied)

    await engine.retrying("clone_up", send)


@hookimpl(trylast=True)
async def datafn_sync_clone_up(engine: SyncEngine, resources: list[str]) -> CloneUpReport:
    report = CloneUpReport()
    if not resources:
        return report
    states = await engine.store.states(resources)
    for resource in resources:
        # a resource that left notStarted may have records from the server: never uploaded
        if states[resource].hydration == "notStarted":
            await _clone_up_resource(engine, resource, report)
    # the queued writes go as themselves: their own mutation ids (a replay is recognised),
    # their guards, in their order
    pushed: PushReport = await engine.run_phase("push", resources=engine.resources)
    report.rejected.extend(pushed.rejected)
    report.rejected.extend(pushed.dead)
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
    if DIGEST_CAPABILITY in engine.server_capabilities:
        # content compared by id range; resources not hydrated yet are compared by count
        states = await engine.store.states(resources)
        report.method = "digest"
        resources = [r for r in resources if states[r].hydration != "ready"]
        for resource in [r for r in states if r not in resources]:
            report.local[resource] = await engine.store.count(resource)
            await reconcile_resource(engine, resource, report)
        if any(report.repaired.values()):
            await engine.run_phase("pull", resources=list(report.repaired))
        if not resources:
            return report
    report.requests += 1
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
