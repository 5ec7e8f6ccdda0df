"""Plugin module of datafn-websockets (client channel registration; server endpoint to come)."""

from __future__ import annotations

from typing import Any

from datafn.plugin import hookimpl
from datafn_websockets.channel import WebSocketChannel


@hookimpl
def datafn_register_realtime_channels(registry: Any) -> None:
    registry.add("websockets", WebSocketChannel, description="WebSocket client channel")
