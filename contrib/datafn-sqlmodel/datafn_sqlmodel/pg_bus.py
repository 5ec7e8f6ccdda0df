"""The PostgreSQL notification bus: cursor notifications across server processes and machines.

Every server process LISTENs on one channel; :meth:`PostgresNotificationBus.publish` sends
``pg_notify(channel, "<seq> <namespace>")``, which PostgreSQL delivers to every listener, this
process included, so local and remote sockets are woken the same way. Select it with::

    [tool.datafn.server]
    database = "postgresql+psycopg://user@host/db"
    notification-bus = "postgresql"          # or a URL of its own: "postgresql://…"

If the listening connection drops, the bus reconnects with backoff. Notifications sent while it
was away are lost, so once it listens again it reads the current seq of every namespace it has
subscribers for from the SQL store's counters (when the bus shares the store's database) and
delivers them: a socket whose client is behind gets a cursor message and pulls, so a write made
during the outage reaches the sockets without waiting for the next one. Nothing wrong is
announced: a cursor message only ever causes a pull, and subscribers skip seqs they have sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import anyio
import psycopg

from datafn.server.bus import NotificationBus

__all__ = ["CHANNEL", "PostgresNotificationBus"]

log = logging.getLogger("datafn.sqlmodel.bus")

CHANNEL = "datafn_cursor"
_MAX_NAMESPACE_BYTES = 4000  # pg_notify payloads must stay under 8000 bytes
_CATCH_UP_CHUNK = 1000  # namespaces per counter query after a reconnect


def _dsn(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return "postgresql://" + rest if sep and scheme.startswith("postgresql") else url


class PostgresNotificationBus(NotificationBus):
    """LISTEN/NOTIFY on ``datafn_cursor``; ``factory(name_or_url, config)``."""

    def __init__(self, url: str, config: Any = None, *, channel: str = CHANNEL) -> None:
        super().__init__()
        if "://" not in url:  # "postgresql": share the server's database
            url = config.server.database if config is not None else url
        self.dsn = _dsn(url)
        self.channel = channel
        self._latest: dict[str, int] = {}
        self._publisher: psycopg.AsyncConnection[Any] | None = None
        self._publish_lock = anyio.Lock()
        # the listener is an asyncio task owned by the bus (opened and closed possibly from
        # different tasks, which an anyio task group would not allow)
        self._listener: asyncio.Task[None] | None = None
        self._listening = anyio.Event()

    async def open(self) -> None:
        try:
            self._publisher = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            self._listener = asyncio.get_running_loop().create_task(
                self._listen_forever(), name="datafn postgresql notification listener"
            )
            with anyio.fail_after(10):
                await self._listening.wait()
        except BaseException:
            await self.aclose()  # no connection or listener task outlives a failed open
            raise

    async def aclose(self) -> None:
        await super().aclose()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None

    async def publish(self, namespace: str, seq: int) -> None:
        payload = f"{seq} {namespace}"
        if len(payload.encode()) > _MAX_NAMESPACE_BYTES:
            log.warning("namespace too long to notify; its sockets will catch up on next pull")
            return
        async with self._publish_lock:
            if self._publisher is None or self._publisher.closed:
                self._publisher = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            await self._publisher.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))

    def _offer(self, namespace: str, seq: int) -> None:
        if seq > self._latest.get(namespace, -1):
            self._latest[namespace] = seq
            if len(self._latest) > 100_000:  # bounded under namespace churn
                self._latest.clear()
        self.deliver(namespace, seq)

    async def _listen_forever(self) -> None:
        delay = 0.1
        while True:
            try:
                async with await self._connect_listener() as conn:
                    await conn.execute(f"LISTEN {self.channel}")
                    if self._listening.is_set():  # a reconnect: deliver what was missed
                        await self._catch_up(conn)
                    self._listening.set()
                    delay = 0.1
                    async for note in conn.notifies():
                        seq_text, _, namespace = note.payload.partition(" ")
                        if seq_text.isdigit() and namespace:
                            self._offer(namespace, int(seq_text))
            except psycopg.Error as exc:
                log.warning("notification listener lost its connection: %s", exc)
            await anyio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _connect_listener(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)

    async def _catch_up(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """After a reconnect (already listening, so nothing falls between): the current seq of
        every namespace with a local subscriber, read from the store's counters, and the latest
        seqs this bus knew, to every subscriber."""
        namespaces = {s.namespace for s in self._subscriptions if s.namespace is not None}
        names = sorted(namespaces | set(self._latest))
        current: dict[str, int] = {}
        try:
            for start in range(0, len(names), _CATCH_UP_CHUNK):
                cursor = await conn.execute(
                    "SELECT namespace, seq FROM datafn_counters WHERE namespace = ANY(%s)",
                    (names[start : start + _CATCH_UP_CHUNK],),
                )
                current.update({str(ns): int(seq) for ns, seq in await cursor.fetchall()})
        except psycopg.Error as exc:  # a database of its own, without the store's tables
            log.warning("no seqs to catch up with after a reconnect: %s", exc)
        for namespace, seq in {**self._latest, **current}.items():
            self._offer(namespace, seq)
