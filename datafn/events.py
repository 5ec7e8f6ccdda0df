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
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from datafn.plugin.manager import AsyncHookCaller, HookFailure

__all__ = ["EVENT_NAMES", "Event", "EventBus", "EventContext", "Listener"]

log = logging.getLogger("datafn.events")

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


class EventBus:
    """Listeners by event name. ``emit`` awaits each listener under ``timeout`` seconds."""

    def __init__(self, *, hooks: AsyncHookCaller | None = None, timeout: float = 30.0) -> None:
        self._listeners: dict[str, list[tuple[Listener, bool]]] = {}
        self._hooks = hooks
        self.timeout = timeout

    def on(self, name: str, listener: Listener) -> Listener:
        """Call ``listener(event)`` for every ``name`` event (``"*"``: every event)."""
        self._check(name)
        self._listeners.setdefault(name, []).append((listener, False))
        return listener

    def once(self, name: str, listener: Listener) -> Listener:
        """Like :meth:`on`, for the next ``name`` event only."""
        self._check(name)
        self._listeners.setdefault(name, []).append((listener, True))
        return listener

    def off(self, name: str, listener: Listener | None = None) -> None:
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
        event = Event(name, EventContext(**fields, extra={**fields.pop("extra", {}), **extra}))
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
