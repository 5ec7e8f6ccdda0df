"""A DataFn server (memory store) on a real loopback socket, in the test's event loop."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from datafn.runtime import Runtime
from datafn.server import create_app
from datafn.server.serve import UvicornServer, uvicorn_server

SCHEMA = {
    "resources": [
        {"name": "todos", "fields": [{"name": "title", "type": "string", "required": True}]}
    ]
}


class Running:
    def __init__(self, app: Any, server: UvicornServer, port: int) -> None:
        self.app = app
        self.server = server
        self.port = port
        self.remote = f"http://127.0.0.1:{port}/datafn"
        self.ws_url = f"ws://127.0.0.1:{port}/datafn/ws"
        self.datafn = app.state.datafn


@asynccontextmanager
async def running_server(**overrides: Any) -> AsyncIterator[Running]:
    runtime = Runtime.boot(use_env=False, **overrides)
    app = create_app(runtime, schema=SCHEMA, store="memory://")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn_server(app, port=port, log_level="warning")
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn only exposes a flag
                await anyio.sleep(0.01)
        try:
            yield Running(app, server, port)
        finally:
            server.begin_shutdown()
    sock.close()


@pytest.fixture
def live() -> Callable[..., Any]:
    return running_server
