"""Plugin module of datafn-websockets: the client channel and the server endpoint.

The channel (the ``websockets`` library) and the endpoint (the server) are imported when a
client turns ``sync.ws`` on and when a server starts, not by every client that loads the plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datafn.plugin import hookimpl

if TYPE_CHECKING:
    from datafn_websockets.channel import WebSocketChannel


def websocket_channel(*args: Any, **kwargs: Any) -> WebSocketChannel:
    """The ``websockets`` channel factory: ``WebSocketChannel(*args, **kwargs)``."""
    from datafn_websockets.channel import WebSocketChannel

    return WebSocketChannel(*args, **kwargs)


@hookimpl
def datafn_register_realtime_channels(registry: Any) -> None:
    registry.add("websockets", websocket_channel, description="WebSocket client channel")


@hookimpl
def datafn_add_server_routes(server: Any, routes: list[Any]) -> None:
    from datafn_websockets.endpoint import add_routes

    add_routes(server, routes)
