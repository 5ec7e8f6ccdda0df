"""``datafn serve --workers 2``, twice, on one PostgreSQL database: concurrent pushes through
every process, pulls that miss nothing, WebSocket notifications across processes."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx
import psycopg
import pytest

from datafn import Client
from datafn.testing.process import ServerProcess

SCHEMA = {
    "resources": [
        {"name": "todos", "fields": [{"name": "title", "type": "string", "required": True}]}
    ]
}
FAST_RECONNECT = {"base_delay": 0.05, "multiplier": 2.0, "max_delay": 1.0, "jitter": 0.05}
WRITERS = 4
ROUNDS = 5
PER_ROUND = 8

pytestmark = pytest.mark.slow


def client(remote: str, name: str, *, ws: bool = False) -> Client:
    return Client(
        schema=SCHEMA,
        remote=remote,
        store="memory://",
        client_id=name,
        use_env=False,
        ws=ws,
        ws_reconnect=FAST_RECONNECT,
    )


async def until_applied(c: Client, holds: Callable[[], Awaitable[bool]], within: float) -> None:
    """Wait until ``holds()``, checking again after each ``sync_applied`` of ``c``."""
    applied = [anyio.Event()]
    c.events.on("sync_applied", lambda event: applied[-1].set())
    with anyio.fail_after(within):
        while True:
            applied.append(anyio.Event())
            if await holds():
                return
            await applied[-1].wait()


async def test_two_multi_worker_servers_on_one_database_miss_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    (tmp_path / "pyproject.toml").write_text(
        '[tool.datafn.server]\nnotification-bus = "postgresql"\n'
    )
    with (
        ServerProcess(schema, database=postgres_url, cwd=tmp_path, workers=2) as first,
        ServerProcess(schema, database=postgres_url, cwd=tmp_path, workers=2) as second,
    ):
        remotes = [first.remote, second.remote]
        writers = [client(remotes[i % 2], f"writer-{i}") for i in range(WRITERS)]
        watcher = client(first.remote, "watcher", ws=True)  # told, never asks on its own
        poller = client(second.remote, "poller")  # pulls while the others push
        async with contextlib.AsyncExitStack() as stack:
            for c in (watcher, poller, *writers):
                await stack.enter_async_context(c)
            connected = anyio.Event()
            watcher.events.on("ws_connected", lambda event: connected.set())
            await watcher.sync.start()
            with anyio.fail_after(20):
                await connected.wait()
            for c in (poller, *writers):
                await c.sync.clone()

            # a write through the other server (other processes) reaches the socket
            await writers[1].table("todos").insert({"id": "todos:b", "title": "via second"})
            await writers[1].sync.push()

            async def arrived() -> bool:
                return await watcher.table("todos").get("todos:b") is not None

            await until_applied(watcher, arrived, 20)

            # then everyone at once, through both servers and all their workers
            done = anyio.Event()

            async def write(index: int) -> None:
                table = writers[index].table("todos")
                for round_ in range(ROUNDS):
                    for n in range(PER_ROUND):
                        record_id = f"todos:w{index}-{round_}-{n}"
                        await table.insert({"id": record_id, "title": record_id})
                    await writers[index].sync.push()

            async def poll() -> None:
                while not done.is_set():
                    await poller.sync.pull()

            async with anyio.create_task_group() as tg:
                tg.start_soon(poll)
                with anyio.fail_after(60):
                    async with anyio.create_task_group() as pushes:
                        for index in range(WRITERS):
                            pushes.start_soon(write, index)
                done.set()
            total = 1 + WRITERS * ROUNDS * PER_ROUND

            # the poller's cursor went past every seq it was told of: one more pull must
            # bring everything, or a pull skipped a seq committed late by another process
            await poller.sync.pull()
            assert await poller.table("todos").count() == total
            for c in writers:
                await c.sync.pull()
                assert await c.table("todos").count() == total

            async def has_all() -> bool:
                return await watcher.table("todos").count() == total

            await until_applied(watcher, has_all, 30)  # the watcher pulls when its socket tells it
            ids = {r["id"] for r in await watcher.table("todos").query()}
            assert ids == {r["id"] for r in await poller.table("todos").query()}
            await watcher.sync.stop()

    with psycopg.connect(postgres_url.replace("+psycopg", "")) as conn:
        count, top = conn.execute("SELECT count(*), max(seq) FROM datafn_changes").fetchone()
    assert count == top == total  # one seq per write, none lost, no gap


def test_workers_refuse_sqlite_and_the_in_process_bus(tmp_path: Path) -> None:
    import subprocess
    import sys

    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    (tmp_path / "pyproject.toml").write_text("[tool.datafn.server]\n")
    for database, expected in (
        (f"sqlite:///{tmp_path / 's.db'}", "2 worker processes need a PostgreSQL database"),
        ("memory://", "2 worker processes need a PostgreSQL database"),
        ("postgresql+psycopg://postgres@127.0.0.1:1/x", 'notification-bus = "postgresql"'),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "datafn", "serve", "--schema", str(schema),
             "--database", database, "--workers", "2", "--port", "0"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 1, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: tool.datafn.server.workers: ")
        assert expected in lines[0]


def wait_for_line(server: ServerProcess, text: str, within: float = 20.0) -> str:
    """The server's output once it holds ``text`` (polled, bounded)."""
    deadline = time.monotonic() + within
    while text not in (output := server.log_path.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"no {text!r} in:\n{output}"
        time.sleep(0.05)
    return output


def test_a_dead_worker_is_reported_and_replaced_and_sigterm_stops_all(
    tmp_path: Path, postgres_url: str
) -> None:
    import psutil

    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    (tmp_path / "pyproject.toml").write_text(
        '[tool.datafn.server]\nnotification-bus = "postgresql"\ntokens = { "t0ken" = "alice" }\n'
    )
    env = {"DATAFN_SERVER__NAMESPACE_TEMPLATE": "user:{subject}"}
    server = ServerProcess(schema, database=postgres_url, cwd=tmp_path, workers=2, env=env)
    server.start()
    try:
        wait_for_line(server, "worker 1 ready")
        wait_for_line(server, "worker 2 ready")
        # every worker has the file's tokens and the environment's namespace template (each
        # request on a connection of its own, which the kernel gives to either worker)
        for n in range(8):
            assert httpx.get(f"{server.remote}/status", timeout=5).status_code == 401
            body = {
                "clientId": "c",
                "mutations": [
                    {
                        "resource": "todos",
                        "version": 1,
                        "operation": "insert",
                        "id": f"todos:{n}",
                        "record": {"title": "t"},
                        "clientId": "c",
                        "mutationId": f"m{n}",
                    }
                ],
            }
            pushed = httpx.post(
                f"{server.remote}/push", json=body, headers={"authorization": "Bearer t0ken"}
            )
            assert pushed.status_code == 200, pushed.text
        with psycopg.connect(postgres_url.replace("+psycopg", "")) as conn:
            counters = conn.execute("SELECT namespace, seq FROM datafn_counters").fetchall()
        assert counters == [("user:alice", 8)]
        assert server.process is not None
        supervisor = psutil.Process(server.process.pid)
        workers = [p for p in supervisor.children() if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2
        victim = workers[0]
        victim.kill()
        output = wait_for_line(server, f"(pid {victim.pid}) exited (killed by SIGKILL)")
        found = re.search(
            rf"worker (\d+) \(pid {victim.pid}\) exited \(killed by SIGKILL\); "
            r"starting another in 1 s",
            output,
        )
        assert found is not None, output
        deadline = time.monotonic() + 20
        while output.count(f"worker {found[1]} ready") < 2:  # its replacement is serving
            assert time.monotonic() < deadline, output
            time.sleep(0.05)
            output = server.log_path.read_text()
        replacement = [
            p
            for p in supervisor.children()
            if "spawn_main" in " ".join(p.cmdline()) and p.pid != workers[1].pid
        ]
        assert len(replacement) == 1 and replacement[0].pid != victim.pid
        for _ in range(4):  # every request answered, whichever worker takes it
            assert httpx.get(f"{server.remote}/health", timeout=5).status_code == 200
        running = [workers[1], replacement[0]]
    finally:
        code = server.stop()
    assert code == -signal.SIGTERM  # as a single server ends on SIGTERM
    _, alive = psutil.wait_procs(running, timeout=10)
    assert not alive
    assert "did not stop" not in server.log_path.read_text()
