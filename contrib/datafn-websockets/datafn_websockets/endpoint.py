"""The server's WebSocket endpoint ``{base}/ws``: authenticated, bounded, coalescing.

Per PROTOCOL.md: the socket is authenticated before anything else, before the upgrade is
accepted (HTTP 401/403 with the error envelope when refused; a browser's credentials may come
as the ``datafn-ticket.<token>`` subprotocol, as the original client sends them),
connection limits are enforced (10 000 in all, 100 per namespace by default; close 4503), the
namespace comes from the authenticated identity, never from a message, and every socket is
closed with 1001 when the server shuts down. After a ``hello`` the server answers at once with
the namespace's cursor when it is above the client's, so nothing committed while the client was
away is missed; afterwards every committed write reaches the sockets of its namespace as
``{"type": "cursor", "cursor": "<seq>"}``, coalesced (a slow socket gets only the latest seq).

Keep-alive pings are the ASGI server's job: ``datafn serve`` runs uvicorn with
``ws_ping_interval`` / ``ws_ping_timeout`` from ``[tool.datafn.server]`` (30 s / 10 s).
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from starlette.responses import JSONResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from datafn.context import RequestContext
from datafn.errors import ProtocolError
from datafn.protocol import HelloMessage, parse_cursor, parse_ws_message
from datafn.server.app import merge_headers
from datafn.server.bus import Subscription

if TYPE_CHECKING:
    from datafn.server import DatafnServer

__all__ = [
    "CLOSE_FORBIDDEN",
    "CLOSE_GOING_AWAY",
    "CLOSE_OVER_LIMIT",
    "CLOSE_UNAUTHENTICATED",
    "RealtimeEndpoint",
]

log = logging.getLogger("datafn.websockets")

CLOSE_GOING_AWAY = 1001
CLOSE_TOO_BIG = 1009
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_OVER_LIMIT = 4503


class RealtimeEndpoint:
    """The ``/ws`` route of one :class:`~datafn.server.DatafnServer`."""

    def __init__(self, server: DatafnServer) -> None:
        self.server = server
        limits = server.limits
        self.max_total = limits.max_ws_connections
        self.max_per_namespace = limits.max_ws_per_namespace
        self.max_message_bytes = limits.max_ws_message_bytes
        self.total = 0
        self.per_namespace: Counter[str] = Counter()
        self._sockets: set[WebSocket] = set()
        self._closing = False
        server.add_shutdown_callback(self.close_all)

    def route(self) -> WebSocketRoute:
        return WebSocketRoute(f"{self.server.base_path}/ws", self.handle)

    async def close_all(self) -> None:
        """Shutdown: close every socket with 1001 (going away)."""
        self._closing = True
        for socket in list(self._sockets):
            await _close(socket, CLOSE_GOING_AWAY, "server shutting down")

    async def handle(self, socket: WebSocket) -> None:
        if self._closing or self.server.draining:
            await _refuse(socket, CLOSE_GOING_AWAY, "server shutting down")
            return
        # a header sent twice is joined as over HTTP: two Authorization headers authenticate
        # nobody, whichever of them a proxy or the ASGI server would have kept
        headers = merge_headers(socket.headers.items())
        offered = list(socket.scope.get("subprotocols") or ())
        ticket = _ticket(offered)
        if ticket is not None and "authorization" not in headers:
            # a browser cannot send headers on a WebSocket: the original client puts its
            # credentials in a subprotocol, `datafn-ticket.<token>`
            headers["authorization"] = f"Bearer {ticket}"
        try:
            identity, namespace = await self.server.authenticate(headers, "ws")
            await self.server.authorize(
                RequestContext("ws", identity, namespace, headers, _host(socket)), None
            )
        except ProtocolError as exc:
            # refused before the upgrade is accepted: the client never sees an open socket,
            # so its reconnect delay keeps growing (a socket accepted and then closed counts
            # as a successful open for the original client, which then retries at once)
            await _deny(socket, exc)
            return
        # reserve the slot before any await so concurrent upgrades cannot overshoot the limits
        if self.total >= self.max_total or self.per_namespace[namespace] >= self.max_per_namespace:
            await _refuse(socket, CLOSE_OVER_LIMIT, "too many connections")
            return
        self.total += 1
        self.per_namespace[namespace] += 1
        try:
            await socket.accept(subprotocol=_chosen(offered))
            if self._closing:  # shutdown began while this socket was authenticated
                await _close(socket, CLOSE_GOING_AWAY, "server shutting down")
                return
            self._sockets.add(socket)
            await self._serve(socket, namespace)
        finally:
            self._sockets.discard(socket)
            self.total -= 1
            self.per_namespace[namespace] -= 1
            if not self.per_namespace[namespace]:
                del self.per_namespace[namespace]

    async def _serve(self, socket: WebSocket, namespace: str) -> None:
        # One task per socket sends its cursors; every cursor comes through its subscription
        # (the hello answer too), so they go out in increasing order without a lock. (Close
        # frames are sent by whoever closes.)
        async with anyio.create_task_group() as tg, self.server.bus.subscribe(namespace) as sub:

            async def forward() -> None:
                sent = -1
                async for note in sub:
                    if note.seq <= sent or socket.application_state != WebSocketState.CONNECTED:
                        continue
                    sent = note.seq
                    try:
                        await socket.send_text(_cursor_message(note.seq))
                    except (WebSocketDisconnect, RuntimeError, OSError):
                        log.debug("socket went away while sending a cursor")

            tg.start_soon(forward)
            try:
                await self._read(socket, namespace, sub)
            finally:
                tg.cancel_scope.cancel()

    async def _read(self, socket: WebSocket, namespace: str, sub: Subscription) -> None:
        """Read until the peer goes: hellos get the current cursor, the rest is ignored."""
        while True:
            try:
                message = await socket.receive()
            except WebSocketDisconnect:
                return
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("text") if message.get("text") is not None else message.get("bytes")
            if data is None:
                continue
            if len(data) > self.max_message_bytes:
                await _close(socket, CLOSE_TOO_BIG, "message too big")
                return
            parsed = parse_ws_message(data)
            if isinstance(parsed, HelloMessage):
                await self._answer_hello(namespace, parsed, sub)

    async def _answer_hello(self, namespace: str, hello: HelloMessage, sub: Subscription) -> None:
        try:
            theirs = max((parse_cursor(c) for c in hello.cursors.values()), default=0)
        except Exception:
            theirs = 0
        ours = await self.server.store.namespace_seq(namespace)
        if ours > theirs:
            sub.offer(namespace, ours)  # sent by the socket's forward task, in order


@functools.lru_cache(maxsize=64)
def _cursor_message(seq: int) -> str:
    """The message for ``seq``, encoded once for every socket it goes to."""
    return orjson.dumps({"type": "cursor", "cursor": str(seq)}).decode()


#: The original client's subprotocols: the protocol itself, and a credential.
SUBPROTOCOL = "datafn-sync-v1"
TICKET_PREFIX = "datafn-ticket."


def _ticket(offered: list[str]) -> str | None:
    for protocol in offered:
        if protocol.startswith(TICKET_PREFIX) and len(protocol) > len(TICKET_PREFIX):
            return protocol[len(TICKET_PREFIX) :]
    return None


def _chosen(offered: list[str]) -> str | None:
    """The subprotocol to answer with: a browser that offered some fails the connection
    unless one of them is chosen; a credential is never echoed."""
    if SUBPROTOCOL in offered:
        return SUBPROTOCOL
    return next((p for p in offered if not p.startswith(TICKET_PREFIX)), None)


async def _deny(socket: WebSocket, error: ProtocolError) -> None:
    """Refuse the upgrade with an HTTP answer (the error envelope, 401 or 403); where the
    ASGI server cannot send one, closing before the accept makes it answer 403."""
    status = 401 if error.http_status == 401 else 403
    body = {
        "ok": False,
        "error": {"code": error.code, "message": error.message, "details": {"path": "$"}},
    }
    try:
        if "websocket.http.response" in socket.scope.get("extensions", {}):
            await socket.send_denial_response(JSONResponse(body, status_code=status))
        else:
            await socket.close(CLOSE_UNAUTHENTICATED if status == 401 else CLOSE_FORBIDDEN)
    except (RuntimeError, OSError, WebSocketDisconnect):
        pass


def _host(socket: WebSocket) -> str | None:
    return socket.client.host if socket.client else None


async def _refuse(socket: WebSocket, code: int, reason: str) -> None:
    """Accept then close, so the client sees the close code (a refused upgrade shows none)."""
    try:
        await socket.accept()
        await socket.close(code, reason[:120])
    except (RuntimeError, OSError, WebSocketDisconnect):
        pass


async def _close(socket: WebSocket, code: int, reason: str) -> None:
    try:
        if socket.application_state == WebSocketState.CONNECTED:
            await socket.close(code, reason)
    except (RuntimeError, OSError, WebSocketDisconnect):
        pass


def add_routes(server: Any, routes: list[Any]) -> RealtimeEndpoint:
    endpoint = RealtimeEndpoint(server)
    routes.append(endpoint.route())
    server.realtime = endpoint
    return endpoint
