"""Real-time across real processes: two servers on one PostgreSQL, and a server restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from datafn import Client, Event
from datafn.testing.process import ServerProcess

SCHEMA = {
    "resources": [
        {"name": "todos", "fields": [{"name": "title", "type": "string", "required": True}]}
    ]
}
FAST_RECONNECT = {"base_delay": 0.05, "multiplier": 2.0, "max_delay": 1.0, "jitter": 0.05}


def project(tmp_path: Path, server_table: str = "") -> Path:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    (tmp_path / "pyproject.toml").write_text(f"[tool.datafn.server]\n{server_table}")
    return schema


def client(remote: str, name: str, *, ws: bool) -> Client:
    return Client(
        schema=SCHEMA,
        remote=remote,
        store="memory://",
        client_id=name,
        use_env=False,
        ws=ws,
        ws_reconnect=FAST_RECONNECT,
    )


class Waiter:
    """Sets an event once ``predicate()`` holds after a ``sync_applied`` of ``client``."""

    def __init__(self, client: Client, predicate: Any) -> None:
        self.done = anyio.Event()

        async def check(event: Event) -> None:
            if await predicate():
                self.done.set()

        client.events.on("sync_applied", check)


async def test_a_write_on_one_server_process_reaches_a_client_of_another(
    tmp_path: Path, postgres_url: str
) -> None:
    schema = project(tmp_path, 'notification-bus = "postgresql"\n')
    with (
        ServerProcess(schema, database=postgres_url, cwd=tmp_path) as first,
        ServerProcess(schema, database=postgres_url, cwd=tmp_path) as second,
    ):
        async with (
            client(first.remote, "a", ws=False) as a,
            client(second.remote, "b", ws=True) as b,
        ):
            connected = anyio.Event()
            b.events.on("ws_connected", lambda event: connected.set())
            await b.sync.start()
            with anyio.fail_after(15):
                await connected.wait()
            await a.sync.clone()
            arrived = Waiter(b, lambda: b.table("todos").get("todos:from-a"))
            await a.table("todos").insert({"id": "todos:from-a", "title": "written on the first"})
            await a.sync.push()
            with anyio.fail_after(15):
                await arrived.done.wait()
            assert await b.table("todos").get("todos:from-a") == {
                "id": "todos:from-a",
                "title": "written on the first",
            }
            await b.sync.stop()


async def test_clients_reconnect_after_a_server_restart_and_miss_nothing(tmp_path: Path) -> None:
    schema = project(tmp_path)
    database = f"sqlite:///{tmp_path / 'server.db'}"
    with ServerProcess(schema, database=database, cwd=tmp_path) as server:
        async with client(server.remote, "b", ws=True) as b:
            connected: list[Event] = []
            disconnected: list[Event] = []
            reconnected = anyio.Event()

            def on_connected(event: Event) -> None:
                connected.append(event)
                if disconnected:
                    reconnected.set()

            b.events.on("ws_connected", on_connected)
            b.events.on("ws_disconnected", disconnected.append)
            await b.sync.start()
            with anyio.fail_after(15):
                while not connected:  # noqa: ASYNC110 - waiting for the first open
                    await anyio.sleep(0.01)

            await anyio.to_thread.run_sync(server.stop)
            await anyio.to_thread.run_sync(server.start)
            # written after the restart, possibly before b is back: hello catch-up covers it
            async with client(server.remote, "a", ws=False) as a:
                await a.sync.clone()
                await a.table("todos").insert({"id": "todos:after", "title": "while away"})
                await a.sync.push()
            arrived = Waiter(b, lambda: b.table("todos").get("todos:after"))
            with anyio.fail_after(20):
                await reconnected.wait()
                if not await b.table("todos").get("todos:after"):
                    await arrived.done.wait()
            assert disconnected and all(e.context.delay is not None for e in disconnected)
            assert await b.table("todos").get("todos:after") == {
                "id": "todos:after",
                "title": "while away",
            }
            await b.sync.stop()


pytestmark = pytest.mark.slow


async def test_datafn_serve_closes_sockets_with_1001_on_sigterm(tmp_path: Path) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    schema = project(tmp_path)
    server = ServerProcess(schema, database=f"sqlite:///{tmp_path / 's.db'}", cwd=tmp_path)
    with server:
        url = server.remote.replace("http://", "ws://") + "/ws"
        async with connect(url) as socket:
            await socket.send(json.dumps({"type": "hello", "clientId": "c", "cursors": {}}))
            await socket.ping()  # the server has the socket registered once it answers
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, server.stop)  # SIGTERM, then waits
                with anyio.fail_after(15), pytest.raises(ConnectionClosed) as info:
                    await socket.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001
