"""The client event bus: ``on`` / ``off`` / ``once`` listeners, sync or async, never fatal.

Every emitted event goes to the listeners registered for its name (then to those registered
for ``"*"``), and then to the ``datafn_on_event`` hook, so observers can be plugins. A listener
that raises or hangs is logged and skipped; sync goes on.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, overload

import anyio

if TYPE_CHECKING:
    from datafn.plugin.manager import AsyncHookCaller, HookFailure

__all__ = [
    "EVENT_NAMES",
    "EVENT_TYPES",
    "AnyListener",
    "ConflictEvent",
    "ConnectivityChangedEvent",
    "EpisodeEvent",
    "Event",
    "EventBus",
    "EventContext",
    "EventName",
    "Listener",
    "MutationAppliedEvent",
    "MutationDiscardedEvent",
    "MutationRejectedEvent",
    "PhaseEvent",
    "PluginErrorEvent",
    "RecordsChangedEvent",
    "SyncAppliedEvent",
    "SyncFailedEvent",
    "SyncRecoveredEvent",
    "SyncRetryEvent",
    "SyncStartedEvent",
    "SyncStuckEvent",
    "WriteEvent",
    "WsConnectedEvent",
    "WsDisconnectedEvent",
]

log = logging.getLogger("datafn.events")

#: The name of an event the client emits (``"*"`` in ``on`` / ``once`` / ``off``: every event).
EventName = Literal[
    "sync_started",
    "sync_applied",
    "sync_failed",
    "sync_retry",
    "connectivity_changed",
    "ws_connected",
    "ws_disconnected",
    "mutation_applied",
    "mutation_rejected",
    "mutation_discarded",
    "records_changed",
    "plugin_error",
    "sync_stuck",
    "sync_recovered",
    "conflict",
]

#: Every event the client emits.
EVENT_NAMES = frozenset(
    {
        "sync_started",  # a sync operation begins: phase, resources
        "sync_applied",  # a clone, pull, push, reconcile, seed or clone_up succeeded
        "sync_failed",  # a sync operation failed after all retries (or was vetoed): error
        "sync_retry",  # before a retry: attempt, delay
        "connectivity_changed",  # online flipped: online
        "ws_connected",  # the real-time channel opened
        "ws_disconnected",  # the real-time channel closed: error, delay
        "mutation_applied",  # a local write committed: resource, record_id, operation
        "mutation_rejected",  # refused for good (or a dead letter): error, mutation_id
        "mutation_discarded",  # the app discarded a queued write or dead letter: mutation_id
        # records changed in the local store: resource, inserted, updated, deleted, origin
        # ("local" or "remote"), reset (a re-clone replaced the whole resource)
        "records_changed",
        "plugin_error",  # a fail-open hook implementation failed: plugin, error
        # the watchdog found sync stuck (once per episode): cause, since, duration, detail
        "sync_stuck",
        "sync_recovered",  # the stuck episode ended: cause, since, duration, recoveries
        # a write met a change of another client it had not seen: role, resource, record_id,
        # fields, ours, theirs, base_seq, overwritten_seq, winning_seq, winner_client_id
        "conflict",
    }
)


@dataclass(frozen=True)
class EventContext:
    """What an event carries. Fields that do not apply to an event are ``None`` / empty."""

    phase: str | None = None
    resources: tuple[str, ...] = ()
    attempt: int | None = None
    delay: float | None = None
    error: BaseException | None = None
    online: bool | None = None
    resource: str | None = None
    record_id: str | None = None
    operation: str | None = None
    mutation_id: str | None = None
    plugin: str | None = None
    result: Any = None
    #: ``records_changed``: the ids, kept apart, where the change came from, and whether the
    #: whole resource was replaced (a re-clone)
    inserted: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    origin: str | None = None
    reset: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    name: str
    context: EventContext


Listener = Callable[[Event], Awaitable[None] | None]
#: A listener of any event class (what ``on`` / ``once`` return)
AnyListener = Callable[..., Awaitable[None] | None]


# --------------------------------------------------------------------- typed events
# ``client.events.on("records_changed", listener)`` calls ``listener`` with a
# ``RecordsChangedEvent``: its properties are the fields that event carries, typed.


def _error(value: BaseException | None) -> BaseException:
    return value if value is not None else RuntimeError("unknown error")


@dataclass(frozen=True, eq=False)
class PhaseEvent(Event):
    """What the events about one sync operation carry (``sync_started``, ``sync_applied``,
    ``sync_failed``)."""

    @property
    def phase(self) -> str:
        """The phase: ``clone``, ``pull``, ``push``, ``reconcile``, ``seed``, ``clone_up`` (and
        ``loop``, ``realtime`` for the background tasks' failures)."""
        return self.context.phase or ""

    @property
    def resources(self) -> tuple[str, ...]:
        """The resources it concerns (empty: all)."""
        return self.context.resources


@dataclass(frozen=True, eq=False)
class SyncStartedEvent(PhaseEvent):
    """``sync_started``: A sync operation begins."""


@dataclass(frozen=True, eq=False)
class SyncAppliedEvent(PhaseEvent):
    """``sync_applied``: A clone, pull, push, reconcile, seed or clone_up succeeded."""

    @property
    def result(self) -> Any:
        """What the phase returned (a :mod:`~datafn.client.reports` report)."""
        return self.context.result


@dataclass(frozen=True, eq=False)
class SyncFailedEvent(PhaseEvent):
    """``sync_failed``: A sync operation failed after all retries (or was vetoed)."""

    @property
    def error(self) -> BaseException:
        """What failed."""
        return _error(self.context.error)


@dataclass(frozen=True, eq=False)
class SyncRetryEvent(Event):
    """``sync_retry``: A failed sync operation is about to be retried."""

    @property
    def phase(self) -> str:
        """The phase."""
        return self.context.phase or ""

    @property
    def attempt(self) -> int:
        """The attempt that failed (1 for the first)."""
        return self.context.attempt or 0

    @property
    def delay(self) -> float:
        """Seconds until the retry."""
        return self.context.delay or 0.0

    @property
    def error(self) -> BaseException:
        """What failed."""
        return _error(self.context.error)


@dataclass(frozen=True, eq=False)
class ConnectivityChangedEvent(Event):
    """``connectivity_changed``: The client went online or offline."""

    @property
    def online(self) -> bool:
        """Whether the server is reachable now."""
        return bool(self.context.online)


@dataclass(frozen=True, eq=False)
class WsConnectedEvent(Event):
    """``ws_connected``: The real-time channel opened."""


@dataclass(frozen=True, eq=False)
class WsDisconnectedEvent(Event):
    """``ws_disconnected``: The real-time channel closed."""

    @property
    def error(self) -> BaseException | None:
        """Why, when it failed."""
        return self.context.error

    @property
    def delay(self) -> float | None:
        """Seconds until the next attempt, when one follows."""
        return self.context.delay


@dataclass(frozen=True, eq=False)
class WriteEvent(Event):
    """What the events about one local write carry (``mutation_applied``,
    ``mutation_rejected``, ``mutation_discarded``)."""

    @property
    def resource(self) -> str:
        """The resource written."""
        return self.context.resource or ""

    @property
    def record_id(self) -> str:
        """The record's id."""
        return self.context.record_id or ""

    @property
    def operation(self) -> str:
        """``insert``, ``merge``, ``replace`` or ``delete``."""
        return self.context.operation or ""

    @property
    def mutation_id(self) -> str:
        """The write's mutation id."""
        return self.context.mutation_id or ""


@dataclass(frozen=True, eq=False)
class MutationAppliedEvent(WriteEvent):
    """``mutation_applied``: A local write committed to the local store."""


@dataclass(frozen=True, eq=False)
class MutationRejectedEvent(WriteEvent):
    """``mutation_rejected``: A write was refused for good (or became a dead letter)."""

    @property
    def error(self) -> Any:
        """The server's error (or why it could not be sent)."""
        return self.context.error


@dataclass(frozen=True, eq=False)
class MutationDiscardedEvent(WriteEvent):
    """``mutation_discarded``: The application discarded a queued write or a dead letter."""


@dataclass(frozen=True, eq=False)
class RecordsChangedEvent(Event):
    """``records_changed``: Records of one resource changed in the local store."""

    @property
    def resource(self) -> str:
        """The resource."""
        return self.context.resource or ""

    @property
    def inserted(self) -> tuple[str, ...]:
        """Ids of the records inserted."""
        return self.context.inserted

    @property
    def updated(self) -> tuple[str, ...]:
        """Ids of the records updated."""
        return self.context.updated

    @property
    def deleted(self) -> tuple[str, ...]:
        """Ids of the records deleted."""
        return self.context.deleted

    @property
    def origin(self) -> Literal["local", "remote"]:
        """``local`` (a write here) or ``remote`` (a pull, clone or reconcile)."""
        return "remote" if self.context.origin == "remote" else "local"

    @property
    def reset(self) -> bool:
        """A re-clone replaced the whole resource."""
        return self.context.reset


@dataclass(frozen=True, eq=False)
class PluginErrorEvent(Event):
    """``plugin_error``: A fail-open hook implementation failed."""

    @property
    def plugin(self) -> str:
        """The plugin's name."""
        return self.context.plugin or ""

    @property
    def error(self) -> BaseException:
        """What it raised."""
        return _error(self.context.error)


@dataclass(frozen=True, eq=False)
class EpisodeEvent(Event):
    """What the watchdog's events carry (``sync_stuck``, ``sync_recovered``)."""

    @property
    def cause(self) -> str:
        """``push_failing``, ``pull_failing``, ``pull_behind``, ``announcement_unanswered`` or
        ``queue_blocked``."""
        return str(self.context.extra.get("cause", ""))

    @property
    def since(self) -> float:
        """When progress stopped, in seconds of the engine's clock."""
        return float(self.context.extra.get("since", 0.0))

    @property
    def duration(self) -> float:
        """Seconds from ``since`` until the episode was found (``sync_stuck``) or its end was
        seen (``sync_recovered``)."""
        return float(self.context.extra.get("duration", 0.0))


@dataclass(frozen=True, eq=False)
class SyncStuckEvent(EpisodeEvent):
    """``sync_stuck``: The watchdog found that sync stopped making progress (once per episode;
    see docs/client.md, "When sync is stuck")."""

    @property
    def detail(self) -> str:
        """What was seen, in words."""
        return str(self.context.extra.get("detail", ""))


@dataclass(frozen=True, eq=False)
class SyncRecoveredEvent(EpisodeEvent):
    """``sync_recovered``: A stuck episode ended: sync makes progress again."""

    @property
    def recoveries(self) -> int:
        """Recovery attempts the watchdog made during the episode."""
        return int(self.context.extra.get("recoveries", 0))


@dataclass(frozen=True, eq=False)
class ConflictEvent(Event):
    """``conflict``: A write and a change of another client it had not seen touched the same
    fields (docs/concepts.md, "Conflicts").

    ``role`` tells this client's part: ``overwrote`` (its write was applied over the other
    change: last writer wins, or a resolver merged it), ``overwritten`` (another client's
    write was applied over this client's change; learnt from a pull) or ``rejected`` (its
    write was refused under the ``reject`` policy and kept as a dead letter: merge with
    ``current`` and write again).
    """

    @property
    def role(self) -> Literal["overwrote", "overwritten", "rejected"]:
        """This client's part in the conflict."""
        return self.context.extra.get("role", "overwrote")  # type: ignore[no-any-return]

    @property
    def resource(self) -> str:
        """The resource of the record."""
        return self.context.resource or ""

    @property
    def record_id(self) -> str:
        """The record's id."""
        return self.context.record_id or ""

    @property
    def mutation_id(self) -> str | None:
        """This client's write (``overwrote``, ``rejected``); None for ``overwritten``."""
        return self.context.mutation_id

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields both changes touched."""
        return tuple(self.context.extra.get("fields", ()))

    @property
    def ours(self) -> dict[str, Any] | None:
        """This client's values of those fields (None when unknown, e.g. a delete)."""
        return self.context.extra.get("ours")

    @property
    def theirs(self) -> dict[str, Any] | None:
        """The other client's values of those fields (None when unknown or deleted)."""
        return self.context.extra.get("theirs")

    @property
    def current(self) -> dict[str, Any] | None:
        """``rejected``: the record as the server holds it now."""
        return self.context.extra.get("current")

    @property
    def base_seq(self) -> int | None:
        """The ``baseSeq`` of the later write: its client had seen every change up to it."""
        return self.context.extra.get("base_seq")

    @property
    def overwritten_seq(self) -> int | None:
        """The seq of the change that was overwritten (None when not applied)."""
        return self.context.extra.get("overwritten_seq")

    @property
    def winning_seq(self) -> int | None:
        """The seq of the change that won (None when unknown: the push answer of
        ``overwrote`` does not carry it)."""
        return self.context.extra.get("winning_seq")

    @property
    def winner_client_id(self) -> str | None:
        """The client whose change stands (None when unknown)."""
        return self.context.extra.get("winner_client_id")

    @property
    def other_client_id(self) -> str | None:
        """The other client of the conflict (None when unknown)."""
        return self.context.extra.get("other_client_id")

    @property
    def resolution(self) -> str | None:
        """How the server settled it: ``last-writer-wins``, ``resolver`` or ``reject``."""
        return self.context.extra.get("resolution")


#: The event class emitted for each event name.
EVENT_TYPES: dict[str, type[Event]] = {
    "sync_started": SyncStartedEvent,
    "sync_applied": SyncAppliedEvent,
    "sync_failed": SyncFailedEvent,
    "sync_retry": SyncRetryEvent,
    "connectivity_changed": ConnectivityChangedEvent,
    "ws_connected": WsConnectedEvent,
    "ws_disconnected": WsDisconnectedEvent,
    "mutation_applied": MutationAppliedEvent,
    "mutation_rejected": MutationRejectedEvent,
    "mutation_discarded": MutationDiscardedEvent,
    "records_changed": RecordsChangedEvent,
    "plugin_error": PluginErrorEvent,
    "sync_stuck": SyncStuckEvent,
    "sync_recovered": SyncRecoveredEvent,
    "conflict": ConflictEvent,
}


class EventBus:
    """Listeners by event name. ``emit`` awaits each listener under ``timeout`` seconds."""

    def __init__(self, *, hooks: AsyncHookCaller | None = None, timeout: float = 30.0) -> None:
        self._listeners: dict[str, list[tuple[Listener, bool]]] = {}
        self._hooks = hooks
        self.timeout = timeout

    @overload
    def on(
        self,
        name: Literal["sync_started"],
        listener: Callable[[SyncStartedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def on(
        self,
        name: Literal["sync_applied"],
        listener: Callable[[SyncAppliedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def on(
        self,
        name: Literal["sync_failed"],
        listener: Callable[[SyncFailedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def on(
        self,
        name: Literal["sync_retry"],
        listener: Callable[[SyncRetryEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def on(
        self,
        name: Literal["connectivity_changed"],
        listener: Callable[[ConnectivityChangedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def on(
        self,
        name: Literal["ws_connected"],
        listener: Callable[[WsConnectedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def on(
        self,
        name: Literal["ws_disconnected"],
        listener: Callable[[WsDisconnectedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def on(
        self,
        name: Literal["mutation_applied"],
        listener: Callable[[MutationAppliedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def on(
        self,
        name: Literal["mutation_rejected"],
        listener: Callable[[MutationRejectedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def on(
        self,
        name: Literal["mutation_discarded"],
        listener: Callable[[MutationDiscardedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def on(
        self,
        name: Literal["records_changed"],
        listener: Callable[[RecordsChangedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def on(
        self,
        name: Literal["plugin_error"],
        listener: Callable[[PluginErrorEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def on(
        self,
        name: Literal["sync_stuck"],
        listener: Callable[[SyncStuckEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def on(
        self,
        name: Literal["sync_recovered"],
        listener: Callable[[SyncRecoveredEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def on(
        self,
        name: Literal["conflict"],
        listener: Callable[[ConflictEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def on(self, name: str, listener: Listener) -> AnyListener: ...

    def on(self, name: str, listener: Callable[[Any], Awaitable[None] | None]) -> Any:
        """Call ``listener(event)`` for every ``name`` event (``"*"``: every event).

        The event is of the class :data:`EVENT_TYPES` gives for the name
        (``"records_changed"`` → :class:`RecordsChangedEvent`), so a listener can be typed
        ``def on_change(event: RecordsChangedEvent) -> None`` and an IDE completes its
        fields (``event.inserted``, ``event.origin``).
        """
        self._check(name)
        self._listeners.setdefault(name, []).append((listener, False))
        return listener

    @overload
    def once(
        self,
        name: Literal["sync_started"],
        listener: Callable[[SyncStartedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def once(
        self,
        name: Literal["sync_applied"],
        listener: Callable[[SyncAppliedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def once(
        self,
        name: Literal["sync_failed"],
        listener: Callable[[SyncFailedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def once(
        self,
        name: Literal["sync_retry"],
        listener: Callable[[SyncRetryEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def once(
        self,
        name: Literal["connectivity_changed"],
        listener: Callable[[ConnectivityChangedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def once(
        self,
        name: Literal["ws_connected"],
        listener: Callable[[WsConnectedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def once(
        self,
        name: Literal["ws_disconnected"],
        listener: Callable[[WsDisconnectedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def once(
        self,
        name: Literal["mutation_applied"],
        listener: Callable[[MutationAppliedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def once(
        self,
        name: Literal["mutation_rejected"],
        listener: Callable[[MutationRejectedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def once(
        self,
        name: Literal["mutation_discarded"],
        listener: Callable[[MutationDiscardedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def once(
        self,
        name: Literal["records_changed"],
        listener: Callable[[RecordsChangedEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def once(
        self,
        name: Literal["plugin_error"],
        listener: Callable[[PluginErrorEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def once(
        self,
        name: Literal["sync_stuck"],
        listener: Callable[[SyncStuckEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def once(
        self,
        name: Literal["sync_recovered"],
        listener: Callable[[SyncRecoveredEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def once(
        self,
        name: Literal["conflict"],
        listener: Callable[[ConflictEvent], Awaitable[None] | None],
    ) -> AnyListener: ...

    @overload
    def once(self, name: str, listener: Listener) -> AnyListener: ...

    def once(self, name: str, listener: Callable[[Any], Awaitable[None] | None]) -> Any:
        """Like :meth:`on`, for the next ``name`` event only."""
        self._check(name)
        self._listeners.setdefault(name, []).append((listener, True))
        return listener

    def off(
        self, name: str, listener: Callable[[Any], Awaitable[None] | None] | None = None
    ) -> None:
        """Remove ``listener`` (or every listener) of ``name``."""
        self._check(name)
        if listener is None:
            self._listeners.pop(name, None)
        else:
            self._listeners[name] = [
                entry for entry in self._listeners.get(name, []) if entry[0] != listener
            ]

    async def emit(self, name: str, **context: Any) -> Event:
        """Deliver an event to its listeners and to the ``datafn_on_event`` hook."""
        self._check(name, emitting=True)
        known = EventContext.__dataclass_fields__
        extra = {k: v for k, v in context.items() if k not in known}
        fields = {k: v for k, v in context.items() if k in known}
        if "resources" in fields:
            fields["resources"] = tuple(fields["resources"])
        event_type = EVENT_TYPES.get(name, Event)
        event = event_type(name, EventContext(**fields, extra={**fields.pop("extra", {}), **extra}))
        for key in (name, "*"):
            entries = self._listeners.get(key, [])
            if any(once for _, once in entries):
                self._listeners[key] = [entry for entry in entries if not entry[1]]
            for listener, _once in entries:
                await self._deliver(listener, event)
        if self._hooks is not None:
            failures: list[HookFailure] = []
            await self._hooks.call_fail_open(
                "datafn_on_event", event=event, on_failure=failures.append
            )
            if name != "plugin_error":  # a failing plugin_error observer is only logged
                for failure in failures:
                    await self.emit("plugin_error", plugin=failure.plugin, error=failure.error)
        return event

    async def _deliver(self, listener: Listener, event: Event) -> None:
        try:
            with anyio.fail_after(self.timeout):
                outcome = listener(event)
                if inspect.isawaitable(outcome):
                    await outcome
        except Exception:
            log.exception(
                "listener %s for %s failed", getattr(listener, "__qualname__", listener), event.name
            )

    @staticmethod
    def _check(name: str, *, emitting: bool = False) -> None:
        if name in EVENT_NAMES or (name == "*" and not emitting):
            return
        raise ValueError(f"unknown event {name!r}; events: {', '.join(sorted(EVENT_NAMES))}")
