"""The sync engine behind ``client.sync``: runs the phases, owns the triggers, keeps status.

Every phase (seed, clone, pull, push, clone_up, reconcile) and the lifecycle loop run through
their ``datafn_sync_*`` hook (:mod:`datafn.plugin.spec`); the defaults are the built-in plugin
:mod:`datafn.builtins.client_phases`. Around each phase the engine emits ``sync_started`` and
then ``sync_applied`` or ``sync_failed``; around each request it calls the fail-closed
``datafn_before_sync`` and the fail-open ``datafn_after_sync`` hooks (:meth:`SyncEngine.request`).

One lock serialises the public operations, so a trigger's pull never interleaves with an
explicit push; phases started from inside a phase (reconcile re-cloning) reuse the held lock
through :meth:`SyncEngine.run_phase`.

Phase hooks are not bounded by ``hook-timeout``: a clone of a million records legitimately
takes longer; each request is bounded by ``sync.request-timeout`` instead.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.abc
import orjson

from datafn.client.reports import (
    CloneProgress,
    CloneReport,
    CloneUpReport,
    PullReport,
    PushReport,
    ReconcileReport,
    SyncStatus,
)
from datafn.client.store import ChangelogEntry, ClientStore
from datafn.client.transport import Transport
from datafn.client.watchdog import Watchdog
from datafn.context import SyncContext
from datafn.errors import (
    ConfigError,
    Conflict,
    DatafnError,
    PluginError,
    ProtocolError,
    SchemaError,
    SchemaMismatch,
    ServiceUnavailable,
    TransportError,
)
from datafn.events import EventBus
from datafn.protocol import SeedResult, StatusResult, WireModel, parse_envelope
from datafn.schema import Schema, schema_differences

if TYPE_CHECKING:
    from datafn.runtime import Runtime

__all__ = ["OPERATIONS", "PHASES", "Signal", "SyncEngine"]

log = logging.getLogger("datafn.sync")

M = TypeVar("M", bound=WireModel)
T = TypeVar("T")

#: What ``client.sync`` offers the application (the blocking facade offers the same).
OPERATIONS = (
    "start",
    "stop",
    "seed",
    "clone",
    "pull",
    "push",
    "clone_up",
    "reconcile",
    "sync_all",
    "wait_idle",
    "status",
    "notify",
    "pending",
    "discard",
)

#: The phases, in lifecycle order.
PHASES = ("seed", "clone", "pull", "push", "clone_up", "reconcile")

#: Codes worth retrying: the server or the network may do better a moment later.
_TRANSIENT_CODES = frozenset(
    {"TRANSPORT_ERROR", "SERVICE_UNAVAILABLE", "INTERNAL", "MUTATION_FAILED", "LIMIT_EXCEEDED"}
)

#: Store metadata set before a push is sent and cleared once its answer has been applied: while
#: set, the server may have applied writes that are still queued here, so nothing the server
#: sends may be rebased under them (they would be applied twice locally). Pulls and clones
#: push first to find out.
PUSH_IN_DOUBT = "push_in_doubt"

#: Phases that apply server data to the local store.
_DOWNLOADS = frozenset({"pull", "clone"})

#: Application signals accepted by :meth:`SyncEngine.notify`.
SIGNALS = frozenset({"focus", "visibility", "online", "offline"})


class Signal:
    """A level-triggered wake-up: ``set()`` wakes the waiter; ``wait()`` consumes it."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        event = self._event
        await event.wait()
        if self._event is event:
            self._event = anyio.Event()


def is_transient(exc: BaseException) -> bool:
    """Whether an error may go away on retry (network, overload, server-side failure)."""
    return isinstance(exc, TransportError | ServiceUnavailable) or (
        isinstance(exc, ProtocolError) and exc.code in _TRANSIENT_CODES
    )


class SyncEngine:
    """``client.sync``: start / stop / seed / clone / pull / push / clone_up / reconcile /
    status / notify.

    Attributes tests may replace: ``sleep`` (awaitable ``sleep(seconds)``) and ``random``
    (``random() -> float`` in [0, 1)) used for retry backoff and jitter.
    """

    def __init__(
        self,
        *,
        runtime: Runtime,
        schema: Schema,
        store: ClientStore,
        transport: Transport | None,
        events: EventBus,
        client_id: str,
    ) -> None:
        self.runtime = runtime
        self.config = runtime.config.sync
        self.schema = schema
        self.store = store
        self.transport = transport
        self.events = events
        self.client_id = client_id
        self.sleep: Callable[[float], Awaitable[None]] = anyio.sleep
        self.random: Callable[[], float] = random.random
        #: the clock of every time-based decision (the watchdog's): seconds, monotonic
        self.clock: Callable[[], float] = anyio.current_time
        #: Local resources (remote-only ones are never cloned or pulled).
        self.resources = [r.name for r in schema.resources if not r.is_remote_only]
        self.online = True
        #: The server seq this client last saw as a whole: set by a complete pull and by each
        #: push answer; a push whose ``cursorBefore`` differs saw other writers.
        self.caught_up: int | None = None
        self.phase: str | None = None
        self.last_sync_at: float | None = None
        self.last_error: BaseException | None = None
        self.download_progress: dict[str, CloneProgress] = {}
        #: Set after each local write (the after-write trigger pushes).
        self.local_writes = Signal()
        #: Set when a push saw changes of other writers (the post-push trigger pulls).
        self.foreign_changes = Signal()
        #: Set when the engine goes offline (the connectivity trigger probes).
        self.went_offline = Signal()
        #: Application signals (``focus``, ``visibility``) for the focus trigger.
        self.app_signals = Signal()
        self.last_app_signal: str | None = None
        #: Set when a real-time channel announced a cursor above ours (pulled in the background).
        self.announced = Signal()
        #: Trigger names that are running (set by the triggers themselves).
        self.active_triggers: set[str] = set()
        self._lock = anyio.Lock()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None
        self._stopped: anyio.Event | None = None
        self._seed_on_start: dict[str, list[dict[str, Any]]] | None = None
        self._first_round = anyio.Event()
        #: while the pull after a push runs: the seq it reaches at least
        self._pulling_to: int | None = None
        self._skipped_announcement = False
        #: whether a push's outcome is unknown (PUSH_IN_DOUBT; None: not read from the store yet)
        self._in_doubt: bool | None = None
        self._stored_doubt = False
        #: whether the server's schema was found compatible since the engine went online
        self._schema_checked = False
        #: resources known to have left ``notStarted`` (they never go back)
        self._started: set[str] = set()
        #: what the server announced in ``/status`` (read with the schema check)
        self.server_capabilities: frozenset[str] = frozenset()
        #: notices when sync stops making progress (datafn.client.watchdog)
        self.watchdog = Watchdog(self)

    # -- lifecycle -----------------------------------------------------------------------------

    def _attach(self, task_group: anyio.abc.TaskGroup) -> None:
        """The client hands over the task group that owns the engine's background tasks."""
        self._task_group = task_group

    @property
    def running(self) -> bool:
        return self._scope is not None

    async def start(self) -> None:
        """Start the lifecycle loop (``datafn_sync_loop``): initial sync, then the triggers.

        Returns once the first round (seed, cloneUp and clone of what is not hydrated, pull,
        push, reconcile) has completed or failed; its failures are in ``status().last_error``
        and ``sync_failed`` events, not raised. Configuration that cannot work (a trigger or
        real-time channel whose plugin is not installed, a bad seed file) raises here.
        """
        if self._scope is not None:
            return
        if self._task_group is None:
            raise RuntimeError("the sync engine starts inside `async with Client(...)`")
        self._require_transport()
        # misconfiguration is the caller's error, never a loop that dies in the background
        self._seed_on_start = (
            self._seed_data(self.config.seed_file) if self.config.seed_file else None
        )
        self._check_plugins()
        self._scope = anyio.CancelScope()
        self._stopped = anyio.Event()
        self._first_round = anyio.Event()
        self._task_group.start_soon(self._run_loop, name="datafn sync loop")
        await self._first_round.wait()

    def _check_plugins(self) -> None:
        """Every trigger and the real-time channel the configuration names is installed."""
        registry = self.runtime.plugins.registry("trigger")
        for name in self.config.triggers if self.config.triggers is not None else ():
            registry.get(name)
        if self.config.ws and self.config.remote:
            self.runtime.plugins.registry("realtime channel").get(self.config.realtime_channel)

    async def _run_loop(self) -> None:
        """Run the loop hook; when it dies, report it (``last_error``, ``sync_failed`` with
        phase ``loop``) and run it again after a growing delay, until stopped."""
        assert self._scope is not None and self._stopped is not None
        failures = 0
        try:
            with self._scope:
                while True:
                    try:
                        await self.call_phase_hook("datafn_sync_loop", engine=self)
                        return
                    except Exception as exc:
                        log.exception("the sync loop ended with an error; restarting it")
                        self.last_error = exc
                        self._first_round.set()
                        await self.events.emit("sync_failed", phase="loop", resources=[], error=exc)
                    failures += 1
                    await self.sleep(self._backoff(failures))
        finally:
            self._first_round.set()
            self._stopped.set()

    def _backoff(self, failures: int) -> float:
        base = float(self.config.retry_base_delay)
        delay = min(base * 2.0 ** (failures - 1), float(self.config.retry_max_delay))
        return delay + self.random() * base

    async def stop(self) -> None:
        """Stop the loop and every trigger; waits until they have ended."""
        if self._scope is None:
            return
        self._scope.cancel()
        assert self._stopped is not None
        await self._stopped.wait()
        self._scope = None
        self.active_triggers.clear()

    async def run_triggers(self) -> None:
        """Run the configured triggers until cancelled (used by the lifecycle loop)."""
        registry = self.runtime.plugins.registry("trigger")
        names = self.config.triggers if self.config.triggers is not None else registry.names()
        triggers = [registry.get(name)(self) for name in names]
        channel = self._realtime_channel()
        async with anyio.create_task_group() as tg:
            for name, trigger in zip(names, triggers, strict=True):
                tg.start_soon(trigger.run, name=f"datafn trigger {name}")
            if channel is not None:
                tg.start_soon(self._supervise_channel, channel, name="datafn realtime channel")
            tg.start_soon(self._pull_when_announced, name="datafn announced cursors")
            tg.start_soon(self.watchdog.run, name="datafn sync watchdog")
            await anyio.sleep_forever()

    async def _supervise_channel(self, channel: Any) -> None:
        """The real-time channel failing never stops HTTP sync: it is reported and run again
        after a growing delay."""
        failures = 0
        while True:
            try:
                await channel.run()
                return
            except Exception as exc:
                failures += 1
                log.warning("the real-time channel failed (%s); restarting it", exc)
                self.last_error = exc
                await self.events.emit("sync_failed", phase="realtime", resources=[], error=exc)
            await self.sleep(self._backoff(failures))

    async def _pull_when_announced(self) -> None:
        # An announcement that arrives during a pull sets the signal again: one more pull.
        self.active_triggers.add("announced")
        while True:
            await self.announced.wait()
            await self.quietly(self.pull)

    def _realtime_channel(self) -> Any:
        """The real-time channel when ``sync.ws`` is on: it calls :meth:`cursor_announced`."""
        if not self.config.ws or not self.config.remote:
            return None
        factory = self.runtime.plugins.registry("realtime channel").get(
            self.config.realtime_channel
        )
        headers: dict[str, str] = {}
        try:
            http = self.runtime.config.section("http")
            headers.update(http.headers)
            if http.token:
                headers["authorization"] = f"Bearer {http.token}"
        except ConfigError:
            pass

        async def cursors() -> dict[str, str]:
            states = await self.store.states(self.resources)
            return {r: str(s.cursor) for r, s in states.items() if s.hydration == "ready"}

        async def on_cursor(cursor: int) -> None:
            await self.cursor_announced(cursor)

        return factory(
            self.config.remote,
            client_id=self.client_id,
            cursors=cursors,
            on_cursor=on_cursor,
            events=self.events,
            settings=self.config.ws_reconnect,
            headers=headers,
        )

    # -- public operations ---------------------------------------------------------------------

    async def seed(self, data: Mapping[str, Sequence[dict[str, Any]]]) -> SeedResult:
        """Send server-side initial data (an administrative call; ``authorize`` decides)."""
        async with self._lock:
            report: SeedResult = await self.run_phase(
                "seed", resources=list(data), data={k: list(v) for k, v in data.items()}
            )
            return report

    async def clone(self, resources: Sequence[str] | None = None) -> CloneReport:
        """Clone the resources (default: every local resource not hydrated yet)."""
        async with self._lock:
            report: CloneReport = await self.run_phase(
                "clone", resources=await self._clone_targets(resources)
            )
            return report

    async def pull(self, resources: Sequence[str] | None = None) -> PullReport:
        """Pull changes since the per-resource cursors (default: every local resource).

        A resource that was never hydrated is hydrated first (cloneUp of data written before
        any sync, then clone), so a pull never silently leaves it out.
        """
        async with self._lock:
            targets = self._targets(resources)
            await self.hydrate_unlocked(targets)
            report: PullReport = await self.run_phase("pull", resources=targets)
            return report

    async def push(self) -> PushReport:
        """Push the changelog; pulls afterwards when other writers were active."""
        async with self._lock:
            return await self.push_unlocked()

    async def clone_up(self, resources: Sequence[str] | None = None) -> CloneUpReport:
        """Upload data created while there was no server, then clone those resources."""
        async with self._lock:
            report: CloneUpReport = await self.run_phase(
                "clone_up", resources=self._targets(resources)
            )
            return report

    async def reconcile(self, resources: Sequence[str] | None = None) -> ReconcileReport:
        """Compare local and server counts and re-clone the resources that differ."""
        async with self._lock:
            report: ReconcileReport = await self.run_phase(
                "reconcile", resources=self._targets(resources)
            )
            return report

    async def sync_all(self) -> None:
        """One full round: cloneUp and clone of unhydrated resources, pull, push."""
        async with self._lock:
            await self.sync_all_unlocked()

    async def sync_all_unlocked(self) -> None:
        self._schema_checked = False  # a full round (start, back online) looks again
        await self.hydrate_unlocked(self.resources)
        await self.run_phase("pull", resources=self.resources)
        await self.push_unlocked()

    async def hydrate_unlocked(self, resources: Sequence[str]) -> None:
        """cloneUp the resources never synced that hold local data, clone every other one
        that is not hydrated."""
        states = await self.store.states(resources)
        fresh = [r for r, s in states.items() if s.hydration == "notStarted"]
        filled = [r for r in fresh if await self.store.count(r) > 0]
        if filled:
            await self.run_phase("clone_up", resources=filled)
        states = await self.store.states(resources)
        unhydrated = [r for r, s in states.items() if s.hydration != "ready"]
        if unhydrated:
            await self.run_phase("clone", resources=unhydrated)

    async def start_lifecycle(self) -> None:
        """What the engine does when it starts, in the documented order: seed (when
        ``seed-file`` is set), then cloneUp of data created offline, clone, pull and push
        (:meth:`sync_all`), then reconcile (unless ``reconcile-on-start`` is off).
        :meth:`start` returns when this has ended."""
        try:
            if self._seed_on_start is not None:
                await self.quietly(lambda: self.seed(self._seed_on_start or {}))
            await self.quietly(self.sync_all)
            if self.config.reconcile_on_start:
                await self.quietly(self.reconcile)
        finally:
            self._first_round.set()

    async def wait_idle(self) -> None:
        """Return when everything written locally is on the server and this client has caught
        up with the server: one full round (:meth:`sync_all`) after whatever sync operation
        runs now. Raises the round's error (``TransportError`` when the server cannot be
        reached); writes made meanwhile may still be queued."""
        async with self._lock:
            await self.sync_all_unlocked()

    def _seed_data(self, source: str) -> dict[str, list[dict[str, Any]]]:
        path = Path(source)
        if not path.is_absolute():
            path = self.runtime.base_dir / path
        key = "tool.datafn.sync.seed-file"
        try:
            data = orjson.loads(path.read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}", key=key) from None
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}", key=key) from None
        if not isinstance(data, dict) or not all(
            isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
            for rows in data.values()
        ):
            raise ConfigError(f"{path}: expected {{resource: [records…]}}", key=key)
        return data

    async def push_unlocked(self) -> PushReport:
        report: PushReport = await self.run_phase("push", resources=self.resources)
        if report.applied:
            # the server's copies of our own writes come back by pull; cursors never move
            # past changes this client has not pulled. The announcement of this push's own
            # seq, arriving meanwhile, asks for no second pull (see cursor_announced).
            self._pulling_to = report.cursor
            try:
                await self.run_phase("pull", resources=self.resources)
            except BaseException:
                if self._skipped_announcement and "announced" in self.active_triggers:
                    self.announced.set()  # the pull that would have reached it failed
                raise
            finally:
                self._pulling_to = None
                self._skipped_announcement = False
        elif report.foreign_changes:
            if "post_push" in self.active_triggers:
                self.foreign_changes.set()
            else:
                await self.run_phase("pull", resources=self.resources)
        return report

    async def status(self) -> SyncStatus:
        """A snapshot: state, phase, pending changes, last sync time and error, online,
        download progress, cursors and hydration per resource."""
        states = await self.store.states(self.resources)
        if not self.online:
            state = "offline"
        elif self.phase is not None:
            state = "syncing"
        elif self.running:
            state = "idle"
        else:
            state = "stopped"
        return SyncStatus(
            state=state,  # type: ignore[arg-type]
            phase=self.phase,
            pending_changes=await self.store.pending_count(),
            dead_letters=len(await self.store.dead_letters()),
            stuck=self.watchdog.snapshot(),
            last_sync_at=self.last_sync_at,
            last_error=self.last_error,
            online=self.online,
            download_progress=dict(self.download_progress),
            cursors={r: s.cursor for r, s in states.items()},
            hydration={r: s.hydration for r, s in states.items()},
        )

    async def notify(self, signal: str) -> None:
        """An application signal: ``focus`` / ``visibility`` (pull), ``online`` / ``offline``.

        GUI programs call ``client.sync.notify("focus")`` when their window gains focus.
        """
        if signal not in SIGNALS:
            raise ValueError(f"unknown signal {signal!r}; signals: {', '.join(sorted(SIGNALS))}")
        if signal in ("online", "offline"):
            await self.set_online(signal == "online")
            return
        self.last_app_signal = signal
        self.app_signals.set()

    async def cursor_announced(self, cursor: int | str) -> bool:
        """The seam for real-time channels: the server announced cursor ``n``.

        When ``n`` is above the global cursor a pull follows — in the background while the engine
        runs (announcements during a pull cause one more pull, none is lost), at once otherwise.
        Returns whether a pull was asked for.
        """
        n = int(cursor)
        if self._pulling_to is not None and n <= self._pulling_to:
            self._skipped_announcement = True
            return False  # the pull that runs after a push reaches it
        if n <= await self.global_cursor():
            return False
        self.watchdog.announced(n)
        if "announced" in self.active_triggers:
            self.announced.set()
        else:
            await self.quietly(self.pull)
        return True

    def notify_write(self) -> None:
        """Called by the client after each committed local write."""
        self.local_writes.set()

    async def records_changed(
        self,
        resource: str,
        *,
        origin: str,
        inserted: Sequence[str] = (),
        updated: Sequence[str] = (),
        deleted: Sequence[str] = (),
        reset: bool = False,
    ) -> None:
        """Emit ``records_changed`` (nothing when nothing changed)."""
        if not (inserted or updated or deleted or reset):
            return
        await self.events.emit(
            "records_changed",
            resource=resource,
            inserted=tuple(inserted),
            updated=tuple(updated),
            deleted=tuple(deleted),
            origin=origin,
            reset=reset,
        )

    async def pending(self) -> list[ChangelogEntry]:
        """The write queue: queued writes in push order (``state="queued"``), then the dead
        letters (``state="dead"``, never pushed again). Each entry has its mutation id,
        resource, record id, operation, ``attempts`` and ``last_error``."""
        return [*(await self.store.changelog()), *(await self.store.dead_letters())]

    async def discard(self, mutation_id: str) -> ChangelogEntry:
        """Remove a queued write or a dead letter. A queued write is taken out of the local
        view: its record goes back to the server's last known state with the remaining
        queued writes on top. Waits for a running sync operation to end.

        :raises KeyError: no queued write or dead letter has this mutation id.
        :raises Conflict: the write was sent and its outcome is not known yet (the server may
            have applied it); push or sync first.
        """
        async with self._lock:
            queued = {e.mutation_id: e for e in await self.store.changelog()}
            if mutation_id in queued and await self.in_doubt():
                # the push whose answer never came may have held this write
                raise Conflict(
                    f"write {mutation_id!r} may have been sent by a push whose outcome is not "
                    "known yet; push (or sync) first, then discard it if it is still queued",
                    path="mutationId",
                )
            removed, unknown = await self.store.discard(mutation_id)
            if removed is None:
                raise KeyError(mutation_id)
            if removed.state == "queued":
                await self.records_changed(
                    removed.resource, origin="local", updated=[removed.record_id]
                )
            for resource in unknown:
                await self.store.reset_hydration(resource)
            await self.write_event("mutation_discarded", removed)
            return removed

    async def write_event(self, name: str, write: Any, **context: Any) -> None:
        """Emit ``name`` about one write (anything with ``resource``, ``record_id``,
        ``operation`` and ``mutation_id``: a changelog entry, a rejected mutation)."""
        await self.events.emit(
            name,
            resource=write.resource,
            record_id=write.record_id,
            operation=write.operation,
            mutation_id=write.mutation_id,
            **context,
        )

    async def in_doubt(self) -> bool:
        """Whether a push was sent whose answer never arrived."""
        if self._in_doubt is None:
            self._in_doubt = self._stored_doubt = await self.store.get_meta(PUSH_IN_DOUBT) == "1"
        return self._in_doubt

    async def set_in_doubt(self, value: bool) -> None:
        """Whether a push's outcome is unknown. Setting it is durable before the push is
        sent; clearing it is kept in memory (a restart then pushes once before it pulls,
        which costs a request and changes nothing) until :meth:`settle_doubt`."""
        await self.in_doubt()
        self._in_doubt = value
        if value and not self._stored_doubt:
            await self.store.set_meta(PUSH_IN_DOUBT, "1")
            self._stored_doubt = True

    async def settle_doubt(self) -> None:
        """Clear the flag once nothing is queued: no write can be applied twice then."""
        await self.in_doubt()
        self._in_doubt = False
        if self._stored_doubt:
            await self.store.set_meta(PUSH_IN_DOUBT, "0")
            self._stored_doubt = False

    async def check_schema(self) -> None:
        """Compare the server's schema with this client's: before the first sync operation,
        at each full round (:meth:`sync_all`: start, back online) and before a write refused
        as invalid is given up.

        Equal hashes pass; otherwise the server's schema (datafn servers include it in
        ``/status``) is compared with :func:`~datafn.schema.schema_differences`.

        :raises SchemaMismatch: the schemas are incompatible; nothing is synced.
        """
        if self._schema_checked:
            return
        status: StatusResult = await self.request("status", "status", None, StatusResult)
        self.server_capabilities = frozenset(status.capabilities)
        if status.schema_hash != self.schema.hash:
            problems: list[str] = []
            if status.server_schema is None:
                # a server that does not show its schema (the original) cannot be compared
                log.warning(
                    "the server's schema hash %s differs from this client's %s and the server "
                    "does not show its schema; syncing without a compatibility check",
                    status.schema_hash,
                    self.schema.hash,
                )
            else:
                try:
                    server = Schema.from_dict(status.server_schema)
                except (SchemaError, ProtocolError) as exc:
                    problems.append(f"the server's schema cannot be read: {exc}")
                else:
                    problems = schema_differences(self.schema, server)
            if problems:
                raise SchemaMismatch(
                    "the server's schema is not compatible with this client's: "
                    + "; ".join(problems)
                    + ". Nothing is synced and no local write is dropped until the client's "
                    "schema is migrated (see docs/client.md, 'Evolving a schema').",
                    path="schema",
                    details={"differences": problems},
                )
        self._schema_checked = True

    async def quietly(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        """Run an operation for a trigger: failures were reported as events; log and go on."""
        try:
            return await operation()
        except DatafnError as exc:
            log.info("background sync failed: %s", exc)
        return None

    # -- what phases use -----------------------------------------------------------------------

    async def global_cursor(self) -> int:
        """The maximum of the per-resource cursors of hydrated resources."""
        states = await self.store.states(self.resources)
        return max((s.cursor for s in states.values() if s.hydration == "ready"), default=0)

    async def set_online(self, online: bool) -> None:
        if online == self.online:
            return
        self.online = online
        if not online:
            self.went_offline.set()
        await self.events.emit("connectivity_changed", online=online)

    async def request(
        self,
        phase: str,
        endpoint: str,
        payload: dict[str, Any] | None,
        model: type[M],
        *,
        resources: Sequence[str] = (),
        parse: Callable[[Any], M] | None = None,
        on_send: Callable[[Any], Awaitable[None]] | None = None,
    ) -> M:
        """Send one request of ``phase`` through the policy hooks and the transport.

        ``datafn_before_sync`` may replace or veto the payload (fail-closed, raises
        :class:`~datafn.errors.SyncVetoed`); ``datafn_after_sync`` observes the parsed result
        (fail-open). A :class:`~datafn.errors.TransportError` marks the client offline.
        ``parse`` replaces :func:`~datafn.protocol.parse_envelope` for hot paths;
        ``on_send(payload)`` runs after the policies accepted the payload, right before it is
        sent.
        """
        transport = self._require_transport()
        context = SyncContext(side="client", client_id=self.client_id, resources=tuple(resources))
        caller = self.runtime.plugins.caller
        if payload is not None:
            payload = await caller.before_sync(phase, payload, context)
        if on_send is not None:
            await on_send(payload)
        try:
            body = await transport.request(endpoint, payload)
        except TransportError:
            await self.set_online(False)
            raise
        await self.set_online(True)
        result = parse(body) if parse is not None else parse_envelope(body, model)
        if payload is not None:
            await caller.after_sync(phase, payload, result, context, on_failure=self._plugin_failed)
        return result

    async def retrying(self, phase: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation``, retrying transient failures up to ``push-max-retries`` times with
        exponential backoff and jitter; ``sync_retry`` is emitted before each retry."""
        attempt = 0
        while True:
            try:
                return await operation()
            except ProtocolError as exc:
                if not is_transient(exc) or attempt >= self.config.push_max_retries:
                    raise
                attempt += 1
                base = self.config.retry_base_delay
                delay = min(base * 2 ** (attempt - 1), self.config.retry_max_delay)
                delay += self.random() * base
                await self.events.emit(
                    "sync_retry", phase=phase, attempt=attempt, delay=delay, error=exc
                )
                await self.sleep(delay)

    async def run_phase(self, phase: str, *, resources: Sequence[str] = (), **kwargs: Any) -> Any:
        """Run one phase through its hook with its events (the caller holds the lock)."""
        self._require_transport()
        resources = list(resources)
        previous, self.phase = self.phase, phase
        await self.events.emit("sync_started", phase=phase, resources=resources)
        hook_kwargs: dict[str, Any] = {"engine": self, **kwargs}
        if phase not in ("push", "seed"):
            hook_kwargs["resources"] = resources
        try:
            await self.check_schema()
            if phase in _DOWNLOADS and await self.in_doubt():
                # server data must not be rebased under writes the server may hold already:
                # push first (a replay answers what became of them)
                self.phase = "push"
                await self.call_phase_hook("datafn_sync_push", engine=self)
                self.phase = phase
            result = await self.call_phase_hook(f"datafn_sync_{phase}", **hook_kwargs)
        except Exception as exc:
            self.last_error = exc
            await self.events.emit("sync_failed", phase=phase, resources=resources, error=exc)
            raise
        finally:
            self.phase = previous
        self.last_sync_at = time.time()
        await self.events.emit("sync_applied", phase=phase, resources=resources, result=result)
        return result

    async def call_phase_hook(self, name: str, **kwargs: Any) -> Any:
        """First-result call of a phase hook through the kernel's caller: unbounded by the
        hook timeout (each request has its own), datafn errors propagate as they are (a
        ``Conflict`` stays a ``Conflict``); anything else names the plugin."""
        result = await self.runtime.plugins.caller.call(
            name, per_call_limit=None, passthrough=(DatafnError,), **kwargs
        )
        if result is None:
            raise PluginError(f"no plugin implements {name}")
        return result

    # -- internals -----------------------------------------------------------------------------

    def _require_transport(self) -> Transport:
        if self.transport is None:
            raise ConfigError(
                "no remote is configured; pass remote=… or set it in [tool.datafn.sync]",
                key="tool.datafn.sync.remote",
            )
        return self.transport

    def _targets(self, resources: Sequence[str] | None) -> list[str]:
        if resources is None:
            return list(self.resources)
        for name in resources:
            spec = self.schema.resource(name, path="resources")
            if spec.is_remote_only:
                raise ConfigError(f"resource {name!r} is remote-only and never synced locally")
        return list(resources)

    async def _clone_targets(self, resources: Sequence[str] | None) -> list[str]:
        if resources is not None:
            return self._targets(resources)
        states = await self.store.states(self.resources)
        return [r for r, s in states.items() if s.hydration != "ready"]

    async def _plugin_failed(self, failure: Any) -> None:
        await self.events.emit("plugin_error", plugin=failure.plugin, error=failure.error)
