"""datafn-websockets: the real-time channel of the DataFn protocol.

Client side: :class:`~datafn_websockets.channel.WebSocketChannel` connects to ``{remote}/ws``,
says ``hello`` with its cursors on every open, and asks the engine to pull when the server
announces a cursor above its own; it reconnects with exponential backoff and jitter.

The names below are imported from their modules on first use, so that loading the plugin
(:mod:`datafn_websockets.plugin`) does not import the ``websockets`` library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datafn_websockets.backoff import ReconnectSchedule
    from datafn_websockets.channel import WebSocketChannel, websocket_url

__all__ = ["ReconnectSchedule", "WebSocketChannel", "websocket_url"]

_MODULES = {
    "ReconnectSchedule": "datafn_websockets.backoff",
    "WebSocketChannel": "datafn_websockets.channel",
    "websocket_url": "datafn_websockets.channel",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
