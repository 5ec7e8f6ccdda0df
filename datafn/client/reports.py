"""What each sync phase returns, and the client's sync status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CloneProgress",
    "CloneReport",
    "CloneUpReport",
    "PullReport",
    "PushReport",
    "ReconcileReport",
    "RejectedMutation",
    "StuckState",
    "SyncStatus",
]


@dataclass
class CloneProgress:
    """Download progress of one resource: records applied, and the server's count when known."""

    resource: str
    done: int = 0
    total: int | None = None
    finished: bool = False


@dataclass
class CloneReport:
    """The clone phase: records applied per resource and the cursor each resource got."""

    records: dict[str, int] = field(default_factory=dict)
    cursors: dict[str, int] = field(default_factory=dict)
    pages: int = 0


@dataclass
class PullReport:
    """The pull phase: changes applied, requests made, and whether more was left on the
    server after ``max-pull-iterations`` requests."""

    changes: int = 0
    requests: int = 0
    cursors: dict[str, int] = field(default_factory=dict)
    has_more: bool = False


@dataclass(frozen=True)
class RejectedMutation:
    """A mutation the server refused for good; ``error`` is the server's error."""

    mutation_id: str
    resource: str
    record_id: str
    operation: str
    error: Any


@dataclass
class PushReport:
    """The push phase: mutations applied and rejected, and whether other writers were seen."""

    applied: int = 0
    rejected: list[RejectedMutation] = field(default_factory=list)
    batches: int = 0
    foreign_changes: bool = False
    #: the server's seq after this push's last batch (0 when nothing was sent)
    cursor: int = 0
    #: writes that became dead letters (refused before they could be sent)
    dead: list[RejectedMutation] = field(default_factory=list)


@dataclass
class CloneUpReport:
    """The cloneUp phase: records uploaded per resource."""

    uploaded: dict[str, int] = field(default_factory=dict)
    rejected: list[RejectedMutation] = field(default_factory=list)


@dataclass
class ReconcileReport:
    """The reconcile phase: counts on both sides and the resources that were re-cloned.

    With a server that compares content (``method == "digest"``), ``repaired`` counts the
    records changed locally per resource (written again or deleted), ``fetched`` the records
    the server sent for the differing id ranges, and ``requests`` the reconcile requests made.
    """

    local: dict[str, int] = field(default_factory=dict)
    remote: dict[str, int] = field(default_factory=dict)
    recloned: list[str] = field(default_factory=list)
    #: ``digest`` (content compared by id range) or ``counts`` (record counts compared)
    method: str = "counts"
    repaired: dict[str, int] = field(default_factory=dict)
    fetched: dict[str, int] = field(default_factory=dict)
    requests: int = 0


@dataclass(frozen=True)
class StuckState:
    """Why sync is stuck (``status().stuck``; see docs/client.md, "When sync is stuck").

    ``cause``: ``push_failing``, ``pull_failing``, ``pull_behind``, ``announcement_unanswered``
    or ``queue_blocked``. ``since`` is when progress stopped and ``duration`` how long ago that
    was at the snapshot, both in seconds of the engine's clock (``engine.clock``, monotonic).
    ``recoveries`` counts the recovery attempts made so far in this episode.
    """

    cause: str
    since: float
    duration: float
    detail: str
    recoveries: int = 0


@dataclass(frozen=True)
class SyncStatus:
    """A snapshot of the sync engine (``await client.sync.status()``).

    ``state``: ``stopped`` (engine not started), ``idle``, ``syncing``, ``offline``.
    ``last_sync_at`` is a Unix time in seconds.
    """

    state: Literal["stopped", "idle", "syncing", "offline"]
    phase: str | None
    pending_changes: int
    last_sync_at: float | None
    last_error: BaseException | None
    online: bool
    download_progress: dict[str, CloneProgress]
    cursors: dict[str, int]
    hydration: dict[str, str]
    #: writes that can never be sent (``client.sync.pending()`` lists them, ``discard`` removes)
    dead_letters: int = 0
    #: set while the watchdog finds sync stuck (None otherwise)
    stuck: StuckState | None = None
