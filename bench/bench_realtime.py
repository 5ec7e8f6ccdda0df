"""Real-time benchmark: change propagation latency and idle WebSocket cost of one server process.

Run: ``python bench/bench_realtime.py`` (or ``nox -s bench``). It starts ``datafn serve`` (SQLite)
in a child process and measures, from this process:

* propagation: writer A inserts a record locally and pushes it; each *full* client B (a
  ``datafn.Client`` with ``ws = true``) has it in its local store after the server's cursor
  message made it pull. Reported as p50/p95/p99 of (B has it) − (A's local write), with 1, 100
  and 1 000 sockets connected to the namespace (up to 5 full clients, the rest bare sockets that
  said hello and count the cursor messages they get: their latency is the fan-out latency).
  The CPU column is the CPU time per write of the server process / of this process (the writer
  and the full clients) / of the bare sockets' process.
* idle sockets: N sockets that said hello and stay open; the server process's RSS growth per
  socket.

Figures only; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.streams.text
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
    """Wakes the measuring loop whenever a measured client heard something."""

    def __init__(self) -> None:
        self.event = anyio.Event()

    def poke(self) -> None:
        self.event.set()

    async def wait(self) -> None:
        await self.event.wait()
        self.event = anyio.Event()


PROGRESS = Progress()


def now() -> float:
    """CLOCK_MONOTONIC: one clock for this process and the bare-socket child."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


async def bare_child(url: str, count: int) -> None:
    """The child: ``count`` sockets say hello; prints ``reached <seq>`` whenever every socket
    has heard a seq, and the arrival times per seq as JSON when stdin closes."""
    latest = [0] * count
    arrivals: dict[int, list[float]] = {}
    reported = 0

    async def listen(index: int, socket: ClientConnection) -> None:
        nonlocal reported
        async for raw in socket:
            message = json.loads(raw)
            if message.get("type") != "cursor" or int(message["cursor"]) <= latest[index]:
                continue
            seq, heard = int(message["cursor"]), now()
            for missed in range(latest[index] + 1, seq + 1):  # coalesced: heard them all now
                arrivals.setdefault(missed, []).append(heard)
            latest[index] = seq
            everyone = min(latest)
            if everyone > reported:
                reported = everyone
                print(f"reached {everyone}", flush=True)

    async with anyio.create_task_group() as tg:
        sockets = []
        for index in range(count):
            socket = await connect(url, compression=None, proxy=None, open_timeout=30)
            await socket.send(json.dumps({"type": "hello", "clientId": f"bare-{index}"}))
            sockets.append(socket)
            tg.start_soon(listen, index, socket)
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)
        print(json.dumps(arrivals), flush=True)
        for socket in sockets:
            await socket.close()
        tg.cancel_scope.cancel()


class BareSockets:
    """Drives the bare-socket child process from the measuring process."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        assert process.stdout is not None
        self.lines = anyio.streams.text.TextReceiveStream(process.stdout)
        self.buffer = ""
        self.reached = 0

    async def line(self) -> str:
        while "\n" not in self.buffer:
            self.buffer += await self.lines.receive()
        line, self.buffer = self.buffer.split("\n", 1)
        return line

    async def until(self, seq: int) -> None:
        while self.reached < seq:
            self.reached = int((await self.line()).split()[1])

    async def arrivals(self) -> dict[int, list[float]]:
        assert self.process.stdin is not None
        await self.process.stdin.aclose()
        while True:
            line = await self.line()
            if line.startswith("{"):
                return {int(k): v for k, v in json.loads(line).items()}


def full_client(remote: str, name: str, ws: bool) -> Client:
    # use_env: DATAFN_PLUGINS, set by main(), keeps other installed plugins out
    return Client(schema=SCHEMA, remote=remote, store="memory://", client_id=name, ws=ws)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def propagation(
    remote: str, pid: int, sockets: int, writes: int, automatic: bool = False
) -> dict[str, Any]:
    """With ``automatic``, the writer runs with the default settings and its engine started:
    its after-write trigger pushes (no explicit push), as an application's writes go."""
    url = remote.replace("http://", "ws://") + "/ws"
    full = min(5, sockets)
    end_to_end: list[float] = []
    fan_out: list[float] = []
    started_at: dict[int, float] = {}
    expected: list[str] = []  # the id of the record written last
    async with (
        full_client(remote, "writer", ws=False) as writer,
        contextlib.AsyncExitStack() as stack,
    ):
        await writer.sync.clone()
        pushed: list[int] = []  # the cursor of the writer's last push (automatic mode)
        if automatic:

            async def on_push(event: Event) -> None:
                if event.context.phase == "push" and event.context.result.cursor:
                    pushed.append(event.context.result.cursor)
                    PROGRESS.poke()

            writer.events.on("sync_applied", on_push)
            await writer.sync.start()
        readers = [full_client(remote, f"reader-{i}", ws=True) for i in range(full)]
        arrivals: list[dict[str, float]] = [{} for _ in readers]
        for reader, seen in zip(readers, arrivals, strict=True):
            await stack.enter_async_context(reader)
            connected = anyio.Event()
            reader.events.on("ws_connected", lambda event, c=connected: c.set())

            async def record(event: Event, r: Client = reader, s: dict[str, float] = seen) -> None:
                # a pull was applied: note when the record being waited for is in the local store
                if event.context.phase == "pull" and expected and expected[-1] not in s:
                    heard = now()
                    if await r.table("todos").get(expected[-1]) is not None:
                        s.setdefault(expected[-1], heard)
                        PROGRESS.poke()

            reader.events.on("sync_applied", record)
            await reader.sync.start()
            with anyio.fail_after(30):
                await connected.wait()
        bare: BareSockets | None = None
        if sockets > full:
            process = await anyio.open_process(
                [sys.executable, __file__, "--bare", str(sockets - full), url]
            )
            await stack.enter_async_context(process)
            bare = BareSockets(process)
            with anyio.fail_after(120):
                assert await bare.line() == "ready"
        watched = [psutil.Process(pid), psutil.Process()]
        if bare is not None:
            watched.append(psutil.Process(bare.process.pid))
        cpu_before = [cpu_seconds(process) for process in watched]
        try:
            for n in range(writes):
                record_id = f"todos:{'auto-' if automatic else ''}{sockets}-{n}"
                expected.append(record_id)
                started = now()
                await writer.table("todos").insert({"id": record_id, "title": f"write {n}"})
                cursor: int | None = None
                if not automatic:
                    report = await writer.sync.push()
                    cursor = report.cursor
                    started_at[cursor] = started
                pushes = len(pushed)
                with anyio.move_on_after(10):
                    while not all(record_id in seen for seen in arrivals) or (
                        automatic and bare is not None and len(pushed) == pushes
                    ):
                        await PROGRESS.wait()
                    if automatic and len(pushed) > pushes:
                        cursor = pushed[-1]
                        started_at[cursor] = started
                    if bare is not None and cursor is not None:
                        await bare.until(cursor)
                end_to_end += [seen[record_id] - started for seen in arrivals if record_id in seen]
            cpu = [cpu_seconds(p) - before for p, before in zip(watched, cpu_before, strict=True)]
            if bare is not None:
                heard = await bare.arrivals()
                for seq, started in started_at.items():
                    fan_out += [t - started for t in heard.get(seq, [])]
        finally:
            for reader in readers:
                await reader.sync.stop()
            await writer.sync.stop()
    return {
        "sockets": sockets,
        "end_to_end": end_to_end,
        "fan_out": fan_out,
        "cpu_per_write": [seconds / max(1, writes) for seconds in cpu],
    }


async def idle_sockets(remote: str, pid: int, count: int) -> tuple[int, float]:
    url = remote.replace("http://", "ws://") + "/ws"
    server = psutil.Process(pid)
    before = server.memory_info().rss
    async with await anyio.open_process(
        [sys.executable, __file__, "--bare", str(count), url]
    ) as process:
        bare = BareSockets(process)
        with anyio.fail_after(300):
            assert await bare.line() == "ready"
        after = server.memory_info().rss
        await bare.arrivals()
    return count, (after - before) / max(1, count) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,100,1000", help="sockets per run, comma-separated")
    parser.add_argument("--writes", type=int, default=50, help="writes per run")
    parser.add_argument("--idle", type=int, default=5000, help="idle sockets to hold")
    parser.add_argument("--bare", nargs=2, metavar=("COUNT", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * args.idle + 1000)), hard))
    if args.bare:
        # the stand-ins for the other clients take as little of the machine as they can
        uvloop = importlib.util.find_spec("uvloop") is not None
        anyio.run(
            bare_child, args.bare[1], int(args.bare[0]), backend_options={"use_uvloop": uvloop}
        )
        return
    # only the plugins under test: the SQL stores and the WebSocket channel and endpoint
    os.environ["DATAFN_PLUGINS"] = "websockets"

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
            f" | {'CPU ms/write':>18}"
        )
        with ServerProcess(
            schema,
            database=f"sqlite:///{tmp / 'rt.db'}",
            cwd=tmp,
            env={"DATAFN_PLUGINS": "sqlmodel-server,websockets"},
        ) as server:
            for n in (int(x) for x in args.clients.split(",")):
                assert server.process is not None
                result = anyio.run(propagation, server.remote, server.process.pid, n, args.writes)
                fan = ms(result["fan_out"]) if result["fan_out"] else "(no bare sockets)".rjust(27)
                cpu = " / ".join(f"{seconds * 1000:4.1f}" for seconds in result["cpu_per_write"])
                print(f"{n:>8} | {ms(result['end_to_end']):>27} | {fan:>27} | {cpu:>18}")
            assert server.process is not None
            # an application's writes: default settings, the after-write trigger pushes
            print("an application's writes, default settings (no explicit push); clients:")
            for n in (2, 6, 100):
                result = anyio.run(
                    propagation, server.remote, server.process.pid, n - 1, args.writes, True
                )
                fan = ms(result["fan_out"]) if result["fan_out"] else "(no bare sockets)".rjust(27)
                cpu = " / ".join(f"{seconds * 1000:4.1f}" for seconds in result["cpu_per_write"])
                print(f"{n:>8} | {ms(result['end_to_end']):>27} | {fan:>27} | {cpu:>18}")
            held, per_socket = anyio.run(idle_sockets, server.remote, server.process.pid, args.idle)
        print(f"idle sockets held by one server process: {held}, {per_socket:.1f} KB each (RSS)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
