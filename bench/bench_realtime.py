"""Real-time benchmark: change propagation latency and idle WebSocket cost of one server process.

Run: ``python bench/bench_realtime.py`` (or ``nox -s bench``). It starts ``datafn serve`` (SQLite)
in a child process and measures, from this process:

* propagation: writer A inserts a record locally and pushes it; each *full* client B (a
  ``datafn.Client`` with ``ws = true``) has it in its local store after the server's cursor
  message made it pull. Reported as p50/p95/p99 of (B has it) − (A's local write), with 1, 100
  and 1 000 sockets connected to the namespace (up to 5 full clients, the rest bare sockets that
  said hello and count the cursor messages they get: their latency is the fan-out latency).
* idle sockets: N sockets that said hello and stay open; the server process's RSS growth per
  socket.

Figures only; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
from websockets.asyncio.client import ClientConnection, connect

from datafn import Client, Event
from datafn.testing.process import ServerProcess

SCHEMA = {
    "resources": [
        {"name": "todos", "fields": [{"name": "title", "type": "string", "required": True}]}
    ]
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(values: list[float]) -> str:
    return " / ".join(f"{percentile(values, q) * 1000:7.2f}" for q in (50, 95, 99))


class Progress:
    """Wakes the measuring loop whenever any client or socket heard something."""

    def __init__(self) -> None:
        self.event = anyio.Event()

    def poke(self) -> None:
        self.event.set()

    async def wait(self) -> None:
        await self.event.wait()
        self.event = anyio.Event()


PROGRESS = Progress()


class BareSocket:
    """A socket that said hello and records when it heard each cursor."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.latest = 0
        self.changed_at = 0.0

    async def listen(self) -> None:
        async for raw in self.socket:
            message = json.loads(raw)
            if message.get("type") == "cursor" and int(message["cursor"]) > self.latest:
                self.latest = int(message["cursor"])
                self.changed_at = time.perf_counter()
                PROGRESS.poke()


async def open_bare(url: str, count: int, tg: anyio.abc.TaskGroup) -> list[BareSocket]:
    sockets = []
    for index in range(count):
        socket = await connect(url, compression=None, proxy=None, open_timeout=30)
        await socket.send(json.dumps({"type": "hello", "clientId": f"bare-{index}", "cursors": {}}))
        bare = BareSocket(socket)
        tg.start_soon(bare.listen)
        sockets.append(bare)
    return sockets


def full_client(remote: str, name: str, ws: bool) -> Client:
    return Client(
        schema=SCHEMA, remote=remote, store="memory://", client_id=name, use_env=False, ws=ws
    )


async def propagation(remote: str, sockets: int, writes: int) -> dict[str, Any]:
    url = remote.replace("http://", "ws://") + "/ws"
    full = min(5, sockets)
    end_to_end: list[float] = []
    fan_out: list[float] = []
    async with (
        anyio.create_task_group() as tg,
        full_client(remote, "writer", ws=False) as writer,
        contextlib.AsyncExitStack() as stack,
    ):
        await writer.sync.clone()
        readers = [full_client(remote, f"reader-{i}", ws=True) for i in range(full)]
        arrivals: list[dict[str, float]] = [{} for _ in readers]
        for reader, seen in zip(readers, arrivals, strict=True):
            await stack.enter_async_context(reader)
            connected = anyio.Event()
            reader.events.on("ws_connected", lambda event, c=connected: c.set())

            async def record(event: Event, r: Client = reader, s: dict[str, float] = seen) -> None:
                if event.context.phase == "pull":
                    now = time.perf_counter()
                    for row in await r.table("todos").query():
                        s.setdefault(row["id"], now)
                    PROGRESS.poke()

            reader.events.on("sync_applied", record)
            await reader.sync.start()
            with anyio.fail_after(30):
                await connected.wait()
        bare = await open_bare(url, sockets - full, tg)
        try:
            for n in range(writes):
                record_id = f"todos:{sockets}-{n}"
                before = [b.latest for b in bare]
                started = time.perf_counter()
                await writer.table("todos").insert({"id": record_id, "title": f"write {n}"})
                await writer.sync.push()
                with anyio.move_on_after(5):
                    while not all(record_id in seen for seen in arrivals) or any(
                        b.latest <= old for b, old in zip(bare, before, strict=True)
                    ):
                        await PROGRESS.wait()
                end_to_end += [seen[record_id] - started for seen in arrivals if record_id in seen]
                fan_out += [
                    b.changed_at - started
                    for b, old in zip(bare, before, strict=True)
                    if b.latest > old
                ]
        finally:
            for reader in readers:
                await reader.sync.stop()
            for b in bare:
                await b.socket.close()
            tg.cancel_scope.cancel()
    return {"sockets": sockets, "end_to_end": end_to_end, "fan_out": fan_out}


async def idle_sockets(remote: str, pid: int, count: int) -> tuple[int, float]:
    url = remote.replace("http://", "ws://") + "/ws"
    server = psutil.Process(pid)
    before = server.memory_info().rss
    async with anyio.create_task_group() as tg:
        bare = await open_bare(url, count, tg)
        await anyio.sleep(1.0)  # let the server settle before reading its RSS
        after = server.memory_info().rss
        held = len(bare)
        for b in bare:
            await b.socket.close()
        tg.cancel_scope.cancel()
    return held, (after - before) / max(1, held) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,100,1000", help="sockets per run, comma-separated")
    parser.add_argument("--writes", type=int, default=50, help="writes per run")
    parser.add_argument("--idle", type=int, default=5000, help="idle sockets to hold")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * args.idle + 1000)), hard))

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        schema = tmp / "schema.json"
        schema.write_text(json.dumps(SCHEMA))
        limit = max(args.idle, max(int(n) for n in args.clients.split(","))) + 100
        (tmp / "pyproject.toml").write_text(
            "[tool.datafn.server.limits]\n"
            f"max-ws-per-namespace = {limit}\nmax-ws-connections = {limit}\n"
        )
        print("real-time benchmark (one server process, SQLite)")
        print(
            f"{'sockets':>8} | {'end to end p50/p95/p99 ms':>27} | {'fan-out p50/p95/p99 ms':>27}"
        )
        with ServerProcess(schema, database=f"sqlite:///{tmp / 'rt.db'}", cwd=tmp) as server:
            for n in (int(x) for x in args.clients.split(",")):
                result = anyio.run(propagation, server.remote, n, args.writes)
                fan = ms(result["fan_out"]) if result["fan_out"] else "(no bare sockets)".rjust(27)
                print(f"{n:>8} | {ms(result['end_to_end']):>27} | {fan:>27}")
            assert server.process is not None
            held, per_socket = anyio.run(idle_sockets, server.remote, server.process.pid, args.idle)
        print(f"idle sockets held by one server process: {held}, {per_socket:.1f} KB each (RSS)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
