"""Loading the plugin imports neither the ``websockets`` library nor the server: every client
loads the plugin, and only one with ``sync.ws`` on needs the channel."""

from __future__ import annotations

from pathlib import Path

import datafn_websockets
from datafn.config import WsReconnectSettings
from datafn.events import EventBus
from datafn.plugin.manager import PluginManager
from datafn.testing.imports import modules_loaded
from datafn_websockets import plugin
from datafn_websockets.channel import WebSocketChannel


def test_loading_the_plugin_imports_neither_websockets_nor_the_server(tmp_path: Path) -> None:
    assert (
        modules_loaded(
            "import datafn_websockets, datafn_websockets.plugin",
            ("websockets", "starlette", "datafn.server", "datafn_websockets.channel"),
            cwd=tmp_path,
        )
        == []
    )


def test_the_registered_factory_builds_the_channel() -> None:
    manager = PluginManager()
    manager.register(plugin, name="websockets")
    factory = manager.registry("realtime channel").get("websockets")

    async def cursors() -> dict[str, str]:
        return {}

    async def on_cursor(cursor: int) -> None:
        return None

    channel = factory(
        "http://127.0.0.1:8787/datafn",
        client_id="c1",
        cursors=cursors,
        on_cursor=on_cursor,
        events=EventBus(),
        settings=WsReconnectSettings(),
    )
    assert isinstance(channel, WebSocketChannel)
    assert channel.url == "ws://127.0.0.1:8787/datafn/ws"


def test_the_package_names_resolve_to_their_modules() -> None:
    assert datafn_websockets.WebSocketChannel is WebSocketChannel
    assert set(datafn_websockets.__all__) <= set(dir(datafn_websockets))
    for name in datafn_websockets.__all__:
        assert getattr(datafn_websockets, name) is not None
