"""Push throughput of ``datafn serve --workers N`` on PostgreSQL, N = 1 then 2.

Several clients push at once, each on its own keep-alive connection, for a fixed time; the
figure is pushes (and mutations) committed per second, with the latency of one push. Two
layouts: every client in a namespace of its own (bearer tokens, ``namespace-template``: the
pushes of different clients take different seq locks) and every client in one namespace (all
pushes queue on that namespace's seq lock, whatever the number of processes)::

    python bench/bench_workers.py [--clients 8] [--batch 10] [--seconds 8]

The load comes from this process over raw HTTP/1.1 (asyncio streams, bodies encoded ahead),
so that the client takes as little of the machine's CPU as it can; the server processes, the
load and PostgreSQL share the same cores. PostgreSQL: the server of
``DATAFN_BENCH_POSTGRES_URL`` (see bench/bench_support.py); a fresh database per run, dropped
afterwards. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psutil
from bench_support import postgres_database

from datafn.testing.process import ServerProcess

SCHEMA = {
    "resources": [
        {
            "name": "todos",
            "fields": [
                {"name": "title", "type": "string", "required": True},
                {"name": "rank", "type": "number"},
            ],
        }
    ]
}


@contextmanager
def server(
    workdir: Path, workers: int, clients: int, own_namespaces: bool
) -> Iterator[tuple[str, int]]:
    """``(remote, pid)`` of a ``datafn serve --workers`` on a fresh database, every worker
    ready."""
    schema = workdir / "schema.json"
    schema.write_bytes(orjson.dumps(SCHEMA))
    settings = 'notification-bus = "postgresql"\nshutdown-timeout = 2\n'
    if own_namespaces:
        tokens = ", ".join(f'"token-{i}" = "client-{i}"' for i in range(clients))
        settings += f'tokens = {{ {tokens} }}\nnamespace-template = "user:{{subject}}"\n'
    (workdir / "pyproject.toml").write_text("[tool.datafn.server]\n" + settings)
    with postgres_database(required=True) as url:
        proc = ServerProcess(schema, database=url, cwd=workdir, workers=workers)
        with proc:
            deadline = time.monotonic() + 60
            while workers > 1 and proc.output().count(" ready (pid ") < workers:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the workers did not start:\n{proc.output()}")
                time.sleep(0.05)
            assert proc.process is not None
            yield proc.remote, proc.process.pid


class Connection:
    """One keep-alive HTTP/1.1 connection that posts JSON and reads the answer's status."""

    def __init__(self, host: str, port: int, path: str, token: str | None) -> None:
        self.host, self.port, self.path = host, port, path
        auth = f"authorization: Bearer {token}\r\n" if token else ""
        self.head = (
            f"POST {path}/push HTTP/1.1\r\nhost: {host}:{port}\r\n{auth}"
            "content-type: application/json\r\ncontent-length: "
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, body: bytes) -> bytes:
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = head[9:12]
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        answer = await self.reader.readexactly(length)
        if status != b"200":
            raise RuntimeError(f"push answered {status.decode()}: {answer[:300]!r}")
        return answer

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def push_bodies(client: int, batch: int, count: int) -> Iterator[bytes]:
    client_id = f"client-{client}"
    for n in range(count):
        mutations = [
            {
                "resource": "todos",
                "version": 1,
                "operation": "insert",
                "id": f"c{client}-{n:06d}-{i:03d}",
                "record": {"title": f"todo {n} {i}", "rank": i},
                "clientId": client_id,
                "mutationId": f"m-{client}-{n}-{i}",
            }
            for i in range(batch)
        ]
        yield orjson.dumps({"clientId": client_id, "mutations": mutations})


async def load(
    remote: str,
    clients: int,
    batch: int,
    seconds: float,
    own_namespaces: bool,
    spread: Callable[[], list[int]],
) -> dict[str, Any]:
    host_port, _, path = remote.removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    connections = [
        Connection(host, int(port), "/" + path, f"token-{i}" if own_namespaces else None)
        for i in range(clients)
    ]
    for connection in connections:
        await connection.open()
    for connection in connections:  # accepted: the server answers on each
        await connection.post(next(push_bodies(-1, 1, 1)))
    connections_per_process = spread()
    warmup = 1.0
    start = time.perf_counter()
    measure_from, until = start + warmup, start + warmup + seconds
    latencies: list[float] = []

    async def run(index: int) -> None:
        bodies = push_bodies(index, batch, 10_000_000)
        while (now := time.perf_counter()) < until:
            await connections[index].post(next(bodies))
            done = time.perf_counter()
            if now >= measure_from:
                latencies.append(done - now)

    await asyncio.gather(*(run(i) for i in range(clients)))
    for connection in connections:
        await connection.close()
    pushes = len(latencies)
    return {
        "connections": connections_per_process,
        "pushes": pushes / seconds,
        "mutations": pushes * batch / seconds,
        "p50": statistics.median(latencies) * 1000 if latencies else 0.0,
        "p99": (statistics.quantiles(latencies, n=100)[98] * 1000) if pushes > 100 else 0.0,
    }


def serving(server_pid: int) -> list[psutil.Process]:
    """The processes that serve: the workers of a supervisor, or the one server process."""
    process = psutil.Process(server_pid)
    workers = [p for p in process.children() if "spawn_main" in " ".join(p.cmdline())]
    return workers or [process]


def cpu_seconds(processes: list[psutil.Process]) -> list[float]:
    out = []
    for process in processes:
        cpu = process.cpu_times()
        out.append(cpu.user + cpu.system)
    return out


def client_connections(processes: list[psutil.Process], port: int) -> list[int]:
    """How many client connections each serving process holds."""
    return [
        sum(1 for c in p.net_connections("tcp") if c.laddr and c.laddr.port == port and c.raddr)
        for p in processes
    ]


def run(args: argparse.Namespace, workers: int, own_namespaces: bool) -> dict[str, Any]:
    """One measurement: a fresh database and server, the load, the figures."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        server(Path(tmp), workers, args.clients, own_namespaces) as (remote, server_pid),
    ):
        port = int(remote.split(":")[2].split("/")[0])
        processes = serving(server_pid)
        before = cpu_seconds(processes)
        row = asyncio.run(
            load(
                remote,
                args.clients,
                args.batch,
                args.seconds,
                own_namespaces,
                lambda: client_connections(processes, port),
            )
        )
        after = cpu_seconds(processes)
    row["workers"] = workers
    row["layout"] = "one per client" if own_namespaces else "one shared"
    row["cpu"] = [a - b for a, b in zip(after, before, strict=True)]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent pushing clients")
    parser.add_argument("--batch", type=int, default=10, help="mutations per push")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument(
        "--namespaces",
        choices=["own", "shared", "both"],
        default="both",
        help="one namespace per client, one for all, or both layouts",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each configuration")
    args = parser.parse_args()
    layouts = {"own": (True,), "shared": (False,), "both": (True, False)}[args.namespaces]
    rows = []
    for own_namespaces in layouts:
        for _ in range(args.repeat):
            for workers in (1, 2):
                row = run(args, workers, own_namespaces)
                rows.append(row)
                print(
                    f"  {row['layout']:<15} workers={workers}: {row['pushes']:,.0f} pushes/s "
                    f"(connections per process {row['connections']}, CPU s per process "
                    f"{[round(c, 1) for c in row['cpu']]})",
                    flush=True,
                )
    print()
    print(
        f"datafn serve --workers N on PostgreSQL: {args.clients} clients pushing {args.batch} "
        f"mutations a push for {args.seconds:g} s (figures, not assertions)"
    )
    print(
        f"{'namespaces':<15} {'workers':>7} {'pushes/s':>10} {'mut/s':>10} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'server CPU s':>13}"
    )
    for row in rows:
        print(
            f"{row['layout']:<15} {row['workers']:>7} {row['pushes']:>10,.0f} "
            f"{row['mutations']:>10,.0f} {row['p50']:>8.2f} {row['p99']:>8.2f} "
            f"{sum(row['cpu']):>13.1f}"
        )


if __name__ == "__main__":
    main()
