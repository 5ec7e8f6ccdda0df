"""datafn-websockets: the real-time channel of the DataFn protocol.

Client side: :class:`~datafn_websockets.channel.WebSocketChannel` connects to ``{remote}/ws``,
says ``hello`` with its cursors on every open, and asks the engine to pull when the server
announces a cursor above its own; it reconnects with exponential backoff and jitter.
"""

from datafn_websockets.backoff import ReconnectSchedule
from datafn_websockets.channel import WebSocketChannel, websocket_url

__all__ = ["ReconnectSchedule", "WebSocketChannel", "websocket_url"]
