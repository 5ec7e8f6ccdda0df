"""The client's WebSocket channel: hello on every open, cursor → pull, reconnect with backoff.

A channel never stops HTTP sync: every connection failure is caught, reported as
``ws_disconnected`` and followed by a reconnect (unless reconnection is disabled or the server
refused our credentials with close code 4401).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from datafn.config import WsReconnectSettings
from datafn.events import EventBus
from datafn.protocol import CursorMessage, parse_cursor, parse_ws_message
from datafn_websockets.backoff import ReconnectSchedule

__all__ = ["CLOSE_OVER_LIMIT", "CLOSE_UNAUTHENTICATED", "WebSocketChannel", "websocket_url"]

log = logging.getLogger("datafn.websockets")

CLOSE_UNAUTHENTICATED = 4401
CLOSE_OVER_LIMIT = 4503


def websocket_url(remote: str) -> str:
    """``http://h/datafn`` → ``ws://h/datafn/ws``; ``https`` → ``wss``."""
    base = remote.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base.removeprefix("https://")
    elif base.startswith("http://"):
        base = "ws://" + base.removeprefix("http://")
    elif not base.startswith(("ws://", "wss://")):
        raise ValueError(f"remote must be an http(s) URL, got {remote!r}")
    return base + "/ws"


class WebSocketChannel:
    """Runs until cancelled (or until reconnection is off and the socket closed).

    :param remote: the server's base URL (``sync.remote``).
    :param client_id: sent in ``hello``.
    :param cursors: returns the per-resource cursors to send in ``hello`` (called on every open).
    :param on_cursor: called with the announced seq of every ``cursor`` message; the engine
        pulls when it is above its global cursor.
    :param events: ``ws_connected`` / ``ws_disconnected`` go here.
    :param settings: the ``[tool.datafn.sync.ws-reconnect]`` settings.
    :param headers: sent with the upgrade request (e.g. ``Authorization``).
    :param sleep: / :param random: injectable for tests of the reconnect schedule.
    """

    def __init__(
        self,
        remote: str,
        *,
        client_id: str,
        cursors: Callable[[], Awaitable[Mapping[str, str]]],
        on_cursor: Callable[[int], Awaitable[None]],
        events: EventBus,
        settings: WsReconnectSettings,
        headers: Mapping[str, str] | None = None,
        max_message_bytes: int = 64 * 1024,
        open_timeout: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.url = websocket_url(remote)
        self.client_id = client_id
        self._cursors = cursors
        self._on_cursor = on_cursor
        self._events = events
        self.settings = settings
        self._headers = dict(headers or {})
        self._max_message_bytes = max_message_bytes
        self._open_timeout = open_timeout
        self._sleep = sleep
        self.schedule = (
            ReconnectSchedule(settings, random=random) if random else ReconnectSchedule(settings)
        )
        self.connected = False
        #: the delays the channel waited before reconnect attempts, in order
        self.delays: list[float] = []

    async def run(self) -> None:
        while True:
            before = self.schedule.attempt
            error = await self._connect_once()
            code = (
                error.rcvd.code
                if isinstance(error, ConnectionClosed) and error.rcvd is not None
                else None
            )
            if isinstance(error, InvalidStatus) and error.response.status_code == 401:
                code = CLOSE_UNAUTHENTICATED  # refused before the upgrade: the same answer
            refused = code == CLOSE_UNAUTHENTICATED
            if code is not None and 4000 <= code < 5000:
                # accepted only to be told no (4503 over the limits): not a successful open,
                # so the backoff keeps growing instead of hammering the server every second
                self.schedule.attempt = before
            retry = self.settings.enabled and not refused
            delay = self.schedule.next_delay() if retry else None
            await self._events.emit("ws_disconnected", error=error, delay=delay)
            if delay is None:
                if refused:
                    log.warning("real-time channel refused (4401): not reconnecting")
                return
            self.delays.append(delay)
            await self._sleep(delay)

    async def _connect_once(self) -> BaseException | None:
        try:
            async with connect(
                self.url,
                additional_headers=self._headers,
                max_size=self._max_message_bytes,
                open_timeout=self._open_timeout,
                proxy=None,
                compression=None,
            ) as socket:
                self.connected = True
                self.schedule.reset()
                hello = {
                    "type": "hello",
                    "clientId": self.client_id,
                    "cursors": dict(await self._cursors()),
                }
                await socket.send(orjson.dumps(hello).decode())
                await self._events.emit("ws_connected")
                async for raw in socket:
                    await self._handle(raw)
                return None
        except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake, InvalidURI) as exc:
            return exc
        finally:
            self.connected = False

    async def _handle(self, raw: str | bytes) -> None:
        message: Any = parse_ws_message(raw)
        if isinstance(message, CursorMessage):
            try:
                seq = parse_cursor(message.cursor)
            except Exception:  # a malformed cursor is a message we do not understand
                return
            await self._on_cursor(seq)
