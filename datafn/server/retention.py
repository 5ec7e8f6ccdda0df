"""Retention: what the server deletes, and when (docs/server.md, "Retention").

Nothing a store holds would otherwise ever be deleted: the idempotency records of every push
and every row of the change log. A retention run, in small batches (``batch-size`` rows per
statement, each batch its own short transaction, other requests served in between):

1. deletes the idempotency records older than ``idempotency-window``;
2. compacts the change log of every namespace up to the seq that is ``change-log-horizon``
   old: per record only the latest change is kept (a merge kept that way becomes the full
   record as it stood), so a client pulling from any cursor still reaches the same records;
3. drops the deletes older than ``tombstone-ttl`` (and the horizon) that are the last change
   of their record, raising the resource's compaction floor to their seq: the highest of them
   stays in the log as the resource's one ``expire`` row, so a pull from a cursor below the
   floor reads it and is refused with ``CURSOR_EXPIRED`` (the client clones again), at no
   cost to any other pull.

Ages are told by marks: each run records, per namespace, where the seq counter stands at that
time, so a change at or below the seq of a mark at least ``age`` old is at least that old (a
change is never judged older than it is; it may be judged younger by up to one ``interval``).

:func:`run_retention` runs it once (``datafn compact``, the server's background task every
``interval`` seconds); :func:`plan_compaction` is the one place the compaction rule lives,
for every store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from datafn.config import RetentionSettings
from datafn.server.store import Change, CompactionStep, ServerStore

__all__ = ["CompactionPlan", "RetentionReport", "plan_compaction", "run_retention"]

log = logging.getLogger("datafn.server.retention")

Key = tuple[str, str]


@dataclass(slots=True)
class CompactionPlan:
    """What a batch of compaction does: the seqs to delete and the rows to rewrite."""

    delete: list[int] = field(default_factory=list)
    rewrite: list[Change] = field(default_factory=list)


def plan_compaction(rows: Sequence[Change], previous: Mapping[Key, Change]) -> CompactionPlan:
    """Compact a batch of change-log rows (in seq order).

    :param rows: the batch, in seq order.
    :param previous: per record of the batch, its latest row below the batch (if any).

    Per record, the rows (``previous`` first) fold into the record's state; every row but the
    last is deleted, and the last, when it is a merge, becomes a ``replace`` holding that
    state. A record whose first row is a merge (no full record to fold it into; the server
    never writes such a log) is left as it is, and so are ``expire`` rows.
    """
    chains: dict[Key, list[Change]] = {
        key: [change] for key, change in previous.items() if change.op != "expire"
    }
    for change in rows:
        if change.op != "expire":  # a resource's floor: never compacted
            chains.setdefault((change.resource, change.id), []).append(change)
    plan = CompactionPlan()
    for chain in chains.values():
        if len(chain) < 2 or chain[0].op == "merge":
            continue
        state: dict[str, Any] | None = None
        foldable = True
        for change in chain:
            if change.op == "delete":
                state = None
            elif change.op == "merge":
                if state is None:  # a merge of a missing record: nothing to fold it into
                    foldable = False
                    break
                state = {**state, **(change.data or {})}
            else:
                state = dict(change.data or {})
        if not foldable:
            continue
        last = chain[-1]
        plan.delete.extend(change.seq for change in chain[:-1])
        if last.op == "merge":
            plan.rewrite.append(Change(last.seq, last.resource, last.id, "replace", state))
    return plan


@dataclass(slots=True)
class RetentionReport:
    """What one retention run removed."""

    idempotency: int = 0
    namespaces: int = 0
    removed: int = 0
    rewritten: int = 0
    dropped: int = 0
    batches: int = 0
    supported: bool = True

    def add(self, step: CompactionStep) -> None:
        self.removed += step.removed
        self.rewritten += step.rewritten
        self.dropped += step.dropped
        self.batches += 1

    def __str__(self) -> str:
        if not self.supported:
            return "the store does not implement retention: nothing was removed"
        return (
            f"{self.idempotency} idempotency records, {self.removed} superseded changes and "
            f"{self.dropped} tombstones removed, {self.rewritten} merges rewritten, in "
            f"{self.namespaces} namespaces ({self.batches} batches)"
        )


async def run_retention(
    store: ServerStore,
    settings: RetentionSettings,
    *,
    now: float | None = None,
    batch_size: int | None = None,
    pause: float = 0.0,
) -> RetentionReport:
    """Run retention once over every namespace of ``store``; log and return what it removed.

    :param now: the time the ages are measured from (default: the current time).
    :param batch_size: rows per batch (default: the ``batch-size`` setting).
    :param pause: seconds to wait between batches (other requests are served in between
        anyway: each batch is its own short transaction).
    """
    report = RetentionReport()
    if not store.supports_retention:
        report.supported = False
        log.warning("retention: the %s store does not implement it; nothing removed", store.name)
        return report
    now = time.time() if now is None else now
    limit = batch_size or settings.batch_size
    before = now - settings.idempotency_window
    while True:
        deleted = await store.prune_idempotency(before, limit)
        report.idempotency += deleted
        report.batches += 1
        if deleted < limit:
            break
        await anyio.sleep(pause)
    ages = [settings.change_log_horizon, max(settings.change_log_horizon, settings.tombstone_ttl)]
    after: str | None = None
    while True:
        namespaces = await store.retention_namespaces(after, limit)
        for namespace in namespaces:
            report.namespaces += 1
            horizon, tombstones = await store.mark_horizons(namespace, now, ages)
            step = CompactionStep(done=False)
            removed = report.removed + report.rewritten + report.dropped
            while not step.done:
                step = await store.compact_changes(namespace, horizon, limit)
                report.add(step)
                await anyio.sleep(pause)
            step = CompactionStep(done=False)
            while not step.done:
                step = await store.drop_tombstones(namespace, tombstones, limit)
                report.add(step)
                await anyio.sleep(pause)
            if report.removed + report.rewritten + report.dropped > removed:
                log.debug(
                    "retention: namespace %r compacted up to seq %d, tombstones up to seq %d",
                    namespace,
                    horizon,
                    tombstones,
                )
        if len(namespaces) < limit:
            break
        after = namespaces[-1]
    log.info("retention: %s", report)
    return report
