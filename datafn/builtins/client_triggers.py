"""Built-in plugin: the automatic sync triggers.

Each trigger is registered by name with ``datafn_register_triggers``; ``factory(engine)``
returns an object whose ``async run()`` the engine runs in its task group while started
(``sync.triggers`` selects which; unset: all). Failures of the phases they start were already
reported as ``sync_failed`` events; triggers log them and keep running.

=============  ===================================================================================
after_write    push after local writes (when ``push-interval`` is unset): at once when idle; writes
               made while a push runs go together in the next one (``push-debounce`` adds a delay)
interval       push every ``push-interval`` seconds (when set)
pull_interval  pull every ``pull-interval`` seconds (when set)
connectivity   while offline, probe ``GET {remote}/status`` with backoff; back online: full sync
focus          pull when the application signals ``focus`` / ``visibility`` (``sync.notify``)
post_push      pull after a push that saw changes of other writers
=============  ===================================================================================

The WebSocket trigger of ``datafn-websockets`` uses the engine's seam
:meth:`~datafn.client.engine.SyncEngine.cursor_announced` (pull if the announced cursor is
above the global cursor).
"""

from __future__ import annotations

from typing import Any

import anyio

from datafn.client.engine import SyncEngine
from datafn.errors import DatafnError, TransportError
from datafn.plugin import hookimpl
from datafn.protocol import StatusResult, parse_envelope
from datafn.registry import Registry

__all__ = [
    "AfterWriteTrigger",
    "ConnectivityTrigger",
    "FocusTrigger",
    "IntervalTrigger",
    "PostPushTrigger",
    "PullIntervalTrigger",
]


def _reachable(engine: SyncEngine) -> bool:
    """Worth trying: online, or offline with nobody probing for the way back (then the next
    attempt is the probe)."""
    return engine.online or "connectivity" not in engine.active_triggers


class AfterWriteTrigger:
    """Push after local writes: at once when nothing is being sent (the writes of the same
    event-loop turn go together), and what is written while a push runs goes in the next
    push, so batches grow with the load instead of with a fixed delay. ``push-debounce``
    adds a delay before each push."""

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine

    async def run(self) -> None:
        engine = self.engine
        if engine.config.push_interval is not None:
            return
        engine.active_triggers.add("after_write")
        while True:
            await engine.local_writes.wait()
            await anyio.sleep(engine.config.push_debounce)  # 0: one turn of the event loop
            if _reachable(engine):
                await engine.quietly(engine.push)


class IntervalTrigger:
    """Push every ``push-interval`` seconds when there is something to push."""

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine

    async def run(self) -> None:
        engine = self.engine
        interval = engine.config.push_interval
        if interval is None:
            return
        engine.active_triggers.add("interval")
        while True:
            await anyio.sleep(interval)
            if _reachable(engine) and await engine.store.pending_count():
                await engine.quietly(engine.push)


class PullIntervalTrigger:
    """Pull every ``pull-interval`` seconds (when set): how a mirror without a real-time
    channel learns of other writers' changes."""

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine

    async def run(self) -> None:
        engine = self.engine
        interval = engine.config.pull_interval
        if interval is None:
            return
        engine.active_triggers.add("pull_interval")
        while True:
            await anyio.sleep(interval)
            if _reachable(engine):
                await engine.quietly(engine.pull)


class ConnectivityTrigger:
    """Detect the way back online and catch up (clone, pull, push) when it comes."""

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine

    async def probe(self) -> bool:
        transport = self.engine.transport
        if transport is None:
            return False
        try:
            parse_envelope(await transport.request("status", None), StatusResult)
        except TransportError:
            return False
        except DatafnError:
            return True  # it answered: the network is back, whatever it said
        return True

    async def run(self) -> None:
        engine = self.engine
        engine.active_triggers.add("connectivity")
        settings = engine.config.ws_reconnect
        while True:
            if engine.online:
                await engine.went_offline.wait()
                if engine.online:
                    continue
            attempt = 0
            while not engine.online:
                delay = min(
                    settings.base_delay * settings.multiplier**attempt
                    + engine.random() * settings.jitter,
                    settings.max_delay,
                )
                await anyio.sleep(delay)
                attempt += 1
                if await self.probe():
                    await engine.set_online(True)
            await engine.quietly(engine.sync_all)


class FocusTrigger:
    """Pull when the application says its window gained focus or became visible."""

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine

    async def run(self) -> None:
        engine = self.engine
        engine.active_triggers.add("focus")
        while True:
            await engine.app_signals.wait()
            if _reachable(engine):
                await engine.quietly(engine.pull)


class PostPushTrigger:
    """Pull after a push that saw changes of other writers."""

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine

    async def run(self) -> None:
        engine = self.engine
        engine.active_triggers.add("post_push")
        try:
            while True:
                await engine.foreign_changes.wait()
                await engine.quietly(engine.pull)
        finally:
            engine.active_triggers.discard("post_push")


@hookimpl(trylast=True)
def datafn_register_triggers(registry: Registry[Any]) -> None:
    registry.add("after_write", AfterWriteTrigger, description="push after local writes")
    registry.add("interval", IntervalTrigger, description="push every push-interval seconds")
    registry.add(
        "pull_interval", PullIntervalTrigger, description="pull every pull-interval seconds"
    )
    registry.add("connectivity", ConnectivityTrigger, description="catch up when back online")
    registry.add("focus", FocusTrigger, description="pull on application focus/visibility")
    registry.add("post_push", PostPushTrigger, description="pull after foreign changes")
