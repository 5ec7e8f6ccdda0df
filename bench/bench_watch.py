"""Watch benchmark: a remote write until a watched query yields it, next to when the record is
in the local store.

Run: ``python bench/bench_watch.py`` (or ``nox -s bench``). It starts ``datafn serve`` (SQLite,
WebSocket endpoint) in a child process. A writer client changes one record (a merge of its
title) and pushes; the reader (``ws = true``, engine started) hears the server's cursor message,
pulls, and its watch of the whole table yields a new result. Reported, as p50/p95/p99 in
milliseconds from the writer's local write:

* ``in store``: the reader's ``records_changed`` event for the record (it is in the local
  store: the propagation figure of bench_realtime.py);
* ``watch yields``: the reader's watch yields a result holding the new title;

for a watch of dicts (``client.table("todos")``) and of pydantic instances
(``client.table(Todo)``), with 10 and 1 000 records in the watched result (a watch re-runs its
query on each change, so its cost grows with the size of the result).

Figures only; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import anyio
from pydantic import BaseModel, Field

from datafn import Client
from datafn.events import RecordsChangedEvent
from datafn.models import ResourceOptions
from datafn.schema import load_schema
from datafn.testing.process import ServerProcess


class Todo(BaseModel):
    __datafn__: ClassVar[ResourceOptions] = {"name": "todos", "id_prefix": "todo"}

    id: str | None = None
    title: str = Field(max_length=200)
    done: bool = False
    priority: int = Field(default=1, ge=0, le=5)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(values: list[float]) -> str:
    return " / ".join(f"{percentile(values, q) * 1000:7.2f}" for q in (50, 95, 99))


def client(remote: str, name: str, *, ws: bool) -> Client:
    return Client(schema=[Todo], remote=remote, store="memory://", client_id=name, ws=ws)


async def measure(remote: str, rows: int, writes: int, typed: bool) -> dict[str, list[float]]:
    in_store: list[float] = []
    yielded: list[float] = []
    async with (
        client(remote, f"writer-{rows}-{typed}", ws=False) as writer,
        client(remote, f"reader-{rows}-{typed}", ws=True) as reader,
        anyio.create_task_group() as tasks,
    ):
        todos = writer.table(Todo)
        await writer.sync.clone()
        have = await todos.count()
        for n in range(have, rows):
            await todos.insert(Todo(id=f"todo:{n:05}", title=f"row {n}"))
        await writer.sync.push()
        connected = anyio.Event()
        reader.events.on("ws_connected", lambda event: connected.set())
        await reader.sync.start()
        with anyio.fail_after(30):
            await connected.wait()

        expected: dict[str, float] = {}  # title being waited for -> when it was written
        stored = anyio.Event()
        shown = anyio.Event()
        target = "todo:00000"

        def on_change(event: RecordsChangedEvent) -> None:
            if event.origin == "remote" and target in event.updated and expected:
                in_store.append(time.perf_counter() - next(iter(expected.values())))
                stored.set()

        reader.events.on("records_changed", on_change)

        async def watch() -> None:
            source: Any = reader.table(Todo) if typed else reader.table("todos")
            async for result in source.watch():
                titles = {(r.title if typed else r["title"]) for r in result}
                for title, started in list(expected.items()):
                    if title in titles:
                        yielded.append(time.perf_counter() - started)
                        del expected[title]
                        shown.set()

        tasks.start_soon(watch)
        await reader.sync.wait_idle()
        for n in range(writes):
            title = f"write {rows} {typed} {n}"
            stored, shown = anyio.Event(), anyio.Event()
            expected[title] = time.perf_counter()
            await todos.merge({"id": target, "title": title})
            await writer.sync.push()
            with anyio.move_on_after(10):
                await stored.wait()
                await shown.wait()
            expected.clear()
        tasks.cancel_scope.cancel()
        await reader.sync.stop()
    return {"in_store": in_store, "yielded": yielded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=100, help="writes per run")
    parser.add_argument("--rows", default="10,1000", help="records in the watched result")
    args = parser.parse_args()
    # only the plugins under test: the SQL stores and the WebSocket channel and endpoint
    os.environ["DATAFN_PLUGINS"] = "websockets"
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        schema = tmp / "schema.json"
        schema.write_text(json.dumps(load_schema([Todo]).to_dict()))
        (tmp / "pyproject.toml").write_text("[tool.datafn]\n")
        print("watch benchmark: remote write -> watch yields (one server process, SQLite)")
        print(
            f"{'rows':>6} | {'watch of':>9} | {'in store p50/p95/p99 ms':>27}"
            f" | {'watch yields p50/p95/p99 ms':>27}"
        )
        with ServerProcess(
            schema,
            database=f"sqlite:///{tmp / 'watch.db'}",
            cwd=tmp,
            env={"DATAFN_PLUGINS": "sqlmodel-server,websockets"},
        ) as server:
            for rows in (int(x) for x in args.rows.split(",")):
                for typed in (False, True):
                    result = anyio.run(measure, server.remote, rows, args.writes, typed)
                    kind = "Todo" if typed else "dict"
                    print(
                        f"{rows:>6} | {kind:>9} | {ms(result['in_store']):>27}"
                        f" | {ms(result['yielded']):>27}"
                    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
