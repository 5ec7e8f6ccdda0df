"""The notification bus contract: "namespace N reached seq S", carried between server parts.

After every committed write the server calls :meth:`NotificationBus.publish`; the real-time
endpoint subscribes and tells the sockets of that namespace to pull. Only the latest seq of a
namespace matters, so a slow subscriber never queues: it sees the highest seq published since
it last looked. The built-in ``memory`` bus works inside one process; a bus plugin for several
processes (PostgreSQL LISTEN/NOTIFY, a broker) implements the same four methods.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio

__all__ = ["MemoryNotificationBus", "Notification", "NotificationBus", "Subscription"]


@dataclass(frozen=True, slots=True)
class Notification:
    namespace: str
    seq: int


class Subscription:
    """What a subscriber reads: ``async for note in subscription`` yields, per wake-up, the
    latest seq of each namespace that moved (never older than one already yielded)."""

    def __init__(self, namespace: str | None) -> None:
        self.namespace = namespace
        self._pending: dict[str, int] = {}
        self._ready = anyio.Event()
        self._closed = False

    def offer(self, namespace: str, seq: int) -> None:
        if self._closed or (self.namespace is not None and namespace != self.namespace):
            return
        if seq > self._pending.get(namespace, -1):
            self._pending[namespace] = seq
            self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Notification:
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            await self._ready.wait()
            self._ready = anyio.Event()
        namespace = next(iter(self._pending))
        return Notification(namespace, self._pending.pop(namespace))


class NotificationBus(abc.ABC):
    """Base class of notification buses (``factory(url, config)`` builds one).

    It keeps this process's subscriptions: a bus implements :meth:`publish` (and, for several
    processes, delivers what other processes publish by calling :meth:`deliver`).
    """

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect (called once when the server starts)."""

    async def aclose(self) -> None:
        """Disconnect and end every subscription."""
        for subscription in list(self._subscriptions):
            subscription.close()
        self._subscriptions.clear()

    @abc.abstractmethod
    async def publish(self, namespace: str, seq: int) -> None:
        """Announce that ``namespace`` has committed changes up to ``seq``."""

    def deliver(self, namespace: str, seq: int) -> None:
        """Hand a notification to this process's subscribers (never blocks)."""
        for subscription in list(self._subscriptions):
            subscription.offer(namespace, seq)

    @asynccontextmanager
    async def subscribe(self, namespace: str | None = None) -> AsyncIterator[Subscription]:
        """An async context manager yielding a :class:`Subscription` to one namespace, or to
        all when ``namespace`` is None."""
        subscription = Subscription(namespace)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            subscription.close()


class MemoryNotificationBus(NotificationBus):
    """The in-process bus: publish hands the seq to every local subscriber at once."""

    def __init__(self, url: str = "memory://", config: Any = None) -> None:
        super().__init__()
        self.url = url

    async def publish(self, namespace: str, seq: int) -> None:
        self.deliver(namespace, seq)
