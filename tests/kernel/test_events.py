"""The event bus: on/off/once, sync and async listeners, failures never break sync."""

from __future__ import annotations

import logging

import anyio
import anyio.lowlevel
import pytest

from datafn import Event, EventBus, hookimpl
from datafn.plugin.manager import PluginManager


async def test_listeners_receive_the_context() -> None:
    bus = EventBus()
    seen: list[Event] = []
    bus.on("sync_applied", seen.append)
    await bus.emit("sync_applied", phase="pull", resources=["todos", "notes"], custom=1)
    (event,) = seen
    assert event.name == "sync_applied"
    assert event.context.phase == "pull"
    assert event.context.resources == ("todos", "notes")
    assert event.context.extra == {"custom": 1}


async def test_retry_event_carries_attempt_and_delay() -> None:
    bus = EventBus()
    seen: list[Event] = []
    bus.on("sync_retry", seen.append)
    await bus.emit("sync_retry", phase="push", attempt=2, delay=1.5)
    assert (seen[0].context.attempt, seen[0].context.delay) == (2, 1.5)


async def test_async_listeners_are_awaited_and_once_fires_once() -> None:
    bus = EventBus()
    calls: list[str] = []

    async def on_async(event: Event) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append("async")

    bus.on("ws_connected", on_async)
    bus.once("ws_connected", lambda event: calls.append("once"))
    await bus.emit("ws_connected")
    await bus.emit("ws_connected")
    assert calls == ["async", "once", "async"]


async def test_off_removes_one_or_all_listeners() -> None:
    bus = EventBus()
    calls: list[str] = []

    def a(event: Event) -> None:
        calls.append("a")

    def b(event: Event) -> None:
        calls.append("b")

    bus.on("sync_failed", a)
    bus.on("sync_failed", b)
    bus.off("sync_failed", a)
    await bus.emit("sync_failed")
    bus.off("sync_failed")
    await bus.emit("sync_failed")
    assert calls == ["b"]


async def test_wildcard_listener_sees_every_event() -> None:
    bus = EventBus()
    names: list[str] = []
    bus.on("*", lambda event: names.append(event.name))
    await bus.emit("connectivity_changed", online=False)
    await bus.emit("mutation_applied", resource="todos")
    assert names == ["connectivity_changed", "mutation_applied"]


async def test_failing_and_hung_listeners_never_break_delivery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus(timeout=0.05)
    calls: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    async def hangs(event: Event) -> None:
        await anyio.sleep_forever()

    bus.on("sync_applied", broken)
    bus.on("sync_applied", hangs)
    bus.on("sync_applied", lambda event: calls.append(event.name))
    with caplog.at_level(logging.ERROR, logger="datafn.events"):
        await bus.emit("sync_applied", phase="push")
    assert calls == ["sync_applied"]
    assert "listener bug" in caplog.text


def test_unknown_event_names_are_refused() -> None:
    bus = EventBus()
    with pytest.raises(ValueError, match="unknown event 'sync_aplied'"):
        bus.on("sync_aplied", print)


async def test_every_event_is_also_a_hook_call_and_hook_failures_are_reported() -> None:
    seen: list[str] = []

    class Observer:
        @hookimpl
        async def datafn_on_event(self, event: Event) -> None:
            seen.append(event.name)

    class Broken:
        @hookimpl
        def datafn_on_event(self, event: Event) -> None:
            if event.name == "sync_started":
                raise RuntimeError("observer down")

    pm = PluginManager()
    pm.register(Observer(), name="observer")
    pm.register(Broken(), name="broken")
    bus = EventBus(hooks=pm.caller)
    reported: list[Event] = []
    bus.on("plugin_error", reported.append)
    await bus.emit("sync_started", phase="clone")
    assert seen == ["sync_started", "plugin_error"]
    assert reported[0].context.plugin == "broken"
    assert "observer down" in str(reported[0].context.error)
