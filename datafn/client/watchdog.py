"""The sync watchdog: notices when sync stops making progress while work is pending, says so
once per stuck episode, and tries the documented recovery.

It watches what the engine does (its ``sync_*`` events, the cursors the real-time channel
announces, the write queue) and, every ``check-interval`` seconds while something is watched,
looks for these causes (thresholds in ``[tool.datafn.sync.watchdog]``):

=========================  ======================================================  ==============
cause                      what it means                                           after
=========================  ======================================================  ==============
push_failing               writes are queued and every push since a failure has    push-after
                           failed
pull_failing               every pull since a failure has failed                   pull-after
pull_behind                pulls end with the server saying there is more, and     pull-after
                           the cursors do not move
announcement_unanswered    the real-time channel announced a cursor above this     announce-after
                           client's, and no pull has caught up with it since
queue_blocked              the oldest queued write stays the oldest through at     queue-after
                           least two pushes
=========================  ======================================================  ==============

While offline (``status().online`` false) a failing push or pull is the connectivity
trigger's business, not a stuck sync: those two causes are not counted and their clocks pause
until the client is back online; an episode under way does not end while offline.

The pull clocks are cleared only by a pull that made requests: ``pull_failing``'s when one
succeeds, ``pull_behind``'s when one catches up (or moves a cursor). A clone clears neither (a
fresh copy is no proof that pulls work again).

The first cause found starts an **episode**: ``sync_stuck`` is emitted once (cause, since,
duration, detail) and ``status().stuck`` is set; when a check finds no cause any more,
``sync_recovered`` is emitted once (cause, since, duration, recoveries) and
``status().stuck`` is cleared. During an episode the watchdog tries a recovery at once and
again each time the cause's threshold passes, at most ``max-recoveries`` times, escalating:

- push_failing, queue_blocked: push at once (no backoff); second attempt: reconnect (go
  offline, so the connectivity trigger probes the server and runs a full round), then push;
- pull_failing, pull_behind: pull again from the last good cursor (a failed pull never moves
  a cursor); second attempt on: clone the resources again (their queued writes are kept and
  rebased), then pull;
- announcement_unanswered: pull at once; second attempt: a full round (``sync_all``); third
  on: clone again, then pull.

A clone again is only for pulls that keep succeeding without catching up, or that keep
failing for a reason a retry does not cure. While the last pull failed transiently (see
:func:`~datafn.client.engine.is_transient`: the server unavailable or overloaded, out of
reach, a timeout, a limit exceeded) or the client is offline, the recovery never clones: the
second attempt reconnects instead, the others pull again. The clone replaces a resource's
records at its first page, in one transaction, under the engine's lock; a clone the server
does not answer leaves every resource as it was (``ready``, pulling from its cursor). Each
resource is cloned again by the watchdog at most once per :data:`RECLONE_WINDOW_FACTOR` ×
``max(pull-after, announce-after)`` seconds, across episodes; a recovery whose clone is not
due pulls only.

Every time is read from the engine's clock (``engine.clock``, ``anyio.current_time`` by
default), so the simulator's virtual time and tests' fake clocks drive it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from datafn.client.reports import PullReport, StuckState

if TYPE_CHECKING:
    from datafn.client.engine import SyncEngine
    from datafn.events import Event

__all__ = ["CAUSES", "RECLONE_WINDOW_FACTOR", "Watchdog"]

log = logging.getLogger("datafn.sync")

#: The causes, in the order a check reports them (the first found names the episode).
CAUSES = (
    "push_failing",
    "pull_failing",
    "pull_behind",
    "announcement_unanswered",
    "queue_blocked",
)

#: The watchdog clones a resource again at most once per this many times ``max(pull-after,
#: announce-after)`` (20 minutes with the defaults), whatever the episodes.
RECLONE_WINDOW_FACTOR = 10


@dataclass
class _Episode:
    cause: str
    since: float
    detail: str
    recoveries: int = 0
    next_recovery: float = 0.0


class Watchdog:
    """The watchdog of one engine (``engine.watchdog``); :meth:`run` is its task, started with
    the triggers; :meth:`check` is one look (tests call it with a fake clock)."""

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine
        self.settings = engine.config.watchdog
        self._push_failing_since: float | None = None
        self._pull_failing_since: float | None = None
        self._pull_error: BaseException | None = None
        self._pull_behind_since: float | None = None
        self._last_cursors: dict[str, int] | None = None
        self._pull_started_at: float | None = None
        self._announced: int | None = None
        self._announced_at: float | None = None
        self._head: str | None = None
        self._head_since = 0.0
        self._pushes_since_head = 0
        self._episode: _Episode | None = None
        self._offline_at: float | None = None
        self._wake = anyio.Event()
        self._recovering = False
        #: when the watchdog last cloned each resource again
        self._recloned_at: dict[str, float] = {}
        events = engine.events
        events.on("sync_started", self._on_started)
        events.on("sync_applied", self._on_applied)
        events.on("sync_failed", self._on_failed)
        events.on("connectivity_changed", self._on_connectivity)

    # -- what it observes ------------------------------------------------------------------

    def _now(self) -> float:
        return float(self.engine.clock())

    def _poke(self) -> None:
        self._wake.set()

    def _on_started(self, event: Event) -> None:
        if event.context.phase == "pull":
            self._pull_started_at = self._now()

    def _on_applied(self, event: Event) -> None:
        phase = event.context.phase
        if phase == "push":
            self._push_failing_since = None
            self._pushes_since_head += 1
        elif phase == "pull":
            self._pulled(event.context.result)
        elif phase == "clone":
            # a fresh copy: the next pull's cursors are compared with its own, not the clone's;
            # the pull clocks go on until a pull succeeds or catches up
            self._last_cursors = None
        else:
            return
        self._poke()

    def _pulled(self, report: Any) -> None:
        now = self._now()
        if not isinstance(report, PullReport):
            self._pull_failing_since, self._pull_error = None, None
            return
        if not report.requests:
            return  # nothing was asked of the server (nothing hydrated): no news
        self._pull_failing_since, self._pull_error = None, None
        if report.has_more:
            last = self._last_cursors or {}
            moved = report.changes > 0 or any(c > last.get(r, c) for r, c in report.cursors.items())
            if moved:
                self._pull_behind_since = None
            elif self._pull_behind_since is None:
                self._pull_behind_since = now
        else:
            self._pull_behind_since = None
            started = self._pull_started_at
            announced_at = self._announced_at
            if announced_at is not None and started is not None and started >= announced_at:
                self._announced = self._announced_at = None  # a whole pull since it
        self._last_cursors = dict(report.cursors)

    def _on_failed(self, event: Event) -> None:
        phase = event.context.phase
        now = self._now()
        if phase == "push":
            if self._push_failing_since is None:
                self._push_failing_since = now
            self._pushes_since_head += 1
        elif phase == "pull":
            if self._pull_failing_since is None:
                self._pull_failing_since = now
            self._pull_error = event.context.error
        else:
            return
        self._poke()

    def _on_connectivity(self, event: Event) -> None:
        # offline time is not stuck time: the failure clocks pause while offline
        now = self._now()
        if not event.context.online:
            self._offline_at = now
            return
        if self._offline_at is not None:
            paused, self._offline_at = now - self._offline_at, None
            if self._push_failing_since is not None:
                self._push_failing_since += paused
            if self._pull_failing_since is not None:
                self._pull_failing_since += paused

    def announced(self, cursor: int) -> None:
        """The real-time channel announced ``cursor``, above this client's (a pull is due)."""
        if self._announced is None or cursor > self._announced:
            self._announced = cursor
        if self._announced_at is None:
            self._announced_at = self._now()
        self._poke()

    # -- the checks ------------------------------------------------------------------------

    def _watching(self) -> bool:
        return (
            self._episode is not None
            or self._push_failing_since is not None
            or self._pull_failing_since is not None
            or self._pull_behind_since is not None
            or self._announced is not None
            or self._head is not None
            or self._pushes_since_head > 0
        )

    def _threshold(self, cause: str) -> float:
        settings = self.settings
        return {
            "push_failing": settings.push_after,
            "pull_failing": settings.pull_after,
            "pull_behind": settings.pull_after,
            "announcement_unanswered": settings.announce_after,
            "queue_blocked": settings.queue_after,
        }[cause]

    async def causes(self, now: float) -> list[tuple[str, float, str]]:
        """The causes found now: ``(cause, since, detail)`` in :data:`CAUSES` order."""
        engine = self.engine
        store = engine.store
        found: list[tuple[str, float, str]] = []
        pending = await store.pending_count()
        if not pending:
            self._push_failing_since = None
            self._head = None
            self._pushes_since_head = 0
        if engine.online:
            since = self._push_failing_since
            if since is not None and now - since >= self.settings.push_after:
                found.append(
                    ("push_failing", since, f"{pending} writes queued; every push has failed since")
                )
            since = self._pull_failing_since
            if since is not None and now - since >= self.settings.pull_after:
                error = engine.last_error
                found.append(("pull_failing", since, f"every pull has failed since: {error}"))
        since = self._pull_behind_since
        if since is not None and now - since >= self.settings.pull_after:
            found.append(
                ("pull_behind", since, "the server says there is more; the cursors do not move")
            )
        if self._announced is not None and self._announced_at is not None:
            cursor = await engine.global_cursor()
            if cursor >= self._announced:
                self._announced = self._announced_at = None
            elif now - self._announced_at >= self.settings.announce_after:
                found.append(
                    (
                        "announcement_unanswered",
                        self._announced_at,
                        f"cursor {self._announced} was announced; this client is at {cursor}",
                    )
                )
        if pending:
            head = await store.changelog(limit=1)
            mutation_id = head[0].mutation_id if head else None
            if mutation_id != self._head:
                self._head, self._head_since, self._pushes_since_head = mutation_id, now, 0
            elif (
                mutation_id is not None
                and self._pushes_since_head >= 2
                and now - self._head_since >= self.settings.queue_after
            ):
                found.append(
                    (
                        "queue_blocked",
                        self._head_since,
                        f"write {mutation_id!r} has stayed the oldest queued write through "
                        f"{self._pushes_since_head} pushes",
                    )
                )
        return found

    async def check(self) -> StuckState | None:
        """One look: start or end an episode (with its event), try a recovery when one is
        due. Returns the state ``status().stuck`` shows."""
        now = self._now()
        found = await self.causes(now)
        episode = self._episode
        if not found and episode is not None and not self.engine.online:
            return self.snapshot()  # offline is no recovery: the episode goes on, untouched
        if not found:
            if episode is not None:
                self._episode = None
                log.info("sync recovered from %s after %.1f s", episode.cause, now - episode.since)
                await self.engine.events.emit(
                    "sync_recovered",
                    cause=episode.cause,
                    since=episode.since,
                    duration=now - episode.since,
                    recoveries=episode.recoveries,
                )
            return None
        cause, since, detail = found[0]
        if episode is None:
            episode = self._episode = _Episode(cause, since, detail, next_recovery=now)
            log.warning("sync is stuck (%s) since %.1f s: %s", cause, now - since, detail)
            await self.engine.events.emit(
                "sync_stuck", cause=cause, since=since, duration=now - since, detail=detail
            )
        else:
            episode.detail = detail
        if episode.recoveries < self.settings.max_recoveries and now >= episode.next_recovery:
            episode.recoveries += 1
            episode.next_recovery = now + self._threshold(cause)
            await self.recover(cause, episode.recoveries)
        return self.snapshot()

    def snapshot(self) -> StuckState | None:
        """What ``status().stuck`` shows (None when not stuck)."""
        episode = self._episode
        if episode is None:
            return None
        return StuckState(
            cause=episode.cause,
            since=episode.since,
            duration=max(0.0, self._now() - episode.since),
            detail=episode.detail,
            recoveries=episode.recoveries,
        )

    # -- recovery --------------------------------------------------------------------------

    async def recover(self, cause: str, attempt: int) -> None:
        """The documented recovery of ``cause``, escalating with ``attempt`` (1, 2, …)."""
        engine = self.engine
        log.info("sync watchdog: recovery %d of %s", attempt, cause)
        if cause in ("push_failing", "queue_blocked"):
            if attempt == 2 and await self._reconnect():
                return
            await engine.quietly(engine.push)
        elif cause in ("pull_failing", "pull_behind") or attempt >= 3:
            if attempt >= 2 and self._transient():
                # the server is down, overloaded or out of reach: a copy would not come either
                if attempt == 2 and await self._reconnect():
                    return
            elif attempt >= 2:
                await self._clone_again()
            await engine.quietly(engine.pull)
        elif attempt == 2:
            await engine.quietly(engine.sync_all)
        else:
            await engine.quietly(engine.pull)

    async def _reconnect(self) -> bool:
        """Go offline so the connectivity trigger probes the server and runs a full round:
        True when that trigger runs (it takes over); otherwise back online at once, False."""
        engine = self.engine
        await engine.set_online(False)
        if "connectivity" in engine.active_triggers:
            return True
        await engine.set_online(True)
        return False

    def _transient(self) -> bool:
        """Whether the pulls fail for a reason a retry cures (or the client is offline)."""
        from datafn.client.engine import is_transient  # the engine module imports this one

        if not self.engine.online:
            return True
        error = self._pull_error
        return self._pull_failing_since is not None and error is not None and is_transient(error)

    async def _clone_again(self) -> None:
        """Clone the hydrated resources again, those not cloned again within the window. The
        clone itself replaces their records at its first page, under the engine's lock: one
        the server does not answer leaves them ``ready`` (nothing is marked beforehand)."""
        engine = self.engine
        now = self._now()
        window = RECLONE_WINDOW_FACTOR * max(self.settings.pull_after, self.settings.announce_after)
        states = await engine.store.states(engine.resources)
        due = [
            resource
            for resource, state in states.items()
            if state.hydration == "ready"
            and now - self._recloned_at.get(resource, now - window) >= window
        ]
        if not due:
            log.info("sync watchdog: every resource was cloned again less than %.0f s ago", window)
            return
        for resource in due:
            self._recloned_at[resource] = now
        await engine.quietly(lambda: engine.clone(due))

    # -- the task --------------------------------------------------------------------------

    async def run(self) -> None:
        """Check every ``check-interval`` seconds while something is watched; sleep until an
        event gives something to watch otherwise (so an idle client has no timer)."""
        if not self.settings.enabled:
            return
        while True:
            if not self._watching():
                self._wake = anyio.Event()
                if not self._watching():
                    await self._wake.wait()
            await anyio.sleep(self.settings.check_interval)
            try:
                await self.check()
            except Exception:  # the watchdog never stops sync; it looks again later
                log.exception("the sync watchdog's check failed")
