"""Loading the plugin imports neither the ``websockets`` library nor the server: every client
loads the plugin, and only one with ``sync.ws`` on needs the channel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datafn_websockets
from datafn.config import WsReconnectSettings
from datafn.events import EventBus
from datafn.plugin.manager import PluginManager
from datafn_websockets import plugin
from datafn_websockets.channel import WebSocketChannel


def test_loading_the_plugin_imports_neither_websockets_nor_the_server(tmp_path: Path) -> None:
    probe = (
        "import json, sys\nimport datafn_websockets, datafn_websockets.plugin\n"
        "print(json.dumps([m for m in ('websockets', 'starlette', 'datafn.server',"
        " 'datafn_websockets.channel') if m in sys.modules]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFN_")}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


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
