"""Plugin module of datafn-websockets: the client channel and the server endpoint."""

from __future__ import annotations

from typing import Any

from datafn.plugin import hookimpl
from datafn_websockets.channel import WebSocketChannel
from datafn_websockets.endpoint import add_routes


@hookimpl
def datafn_register_realtime_channels(registry: Any) -> None:
    registry.add("websockets", WebSocketChannel, description="WebSocket client channel")


@hookimpl
def datafn_add_server_routes(server: Any, routes: list[Any]) -> None:
    add_routes(server, routes)
