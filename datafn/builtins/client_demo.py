"""``datafn demo``: a server and two clients on SQLite, narrated.

Starts a DataFn server on a free loopback port (SQLite file), seeds it, and runs two clients
("laptop" and "phone", each with its own SQLite file) through the main job of the library:
clone with progress bars, offline writes, their push, the other client pulling them, a
guarded write that conflicts, and a reconcile that repairs a damaged local copy.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from datafn.client import Client
from datafn.events import Event

__all__ = ["DEMO_SCHEMA", "run_demo"]

DEMO_SCHEMA: dict[str, Any] = {
    "resources": [
        {
            "name": "todos",
            "idPrefix": "todo",
            "fields": [
                {"name": "title", "type": "string", "required": True, "maxLength": 200},
                {"name": "done", "type": "boolean", "default": False},
                {"name": "priority", "type": "number", "min": 0, "max": 5, "default": 1},
            ],
        },
        {"name": "notes", "fields": [{"name": "body", "type": "string", "required": True}]},
    ]
}


@contextlib.asynccontextmanager
async def serve_in_process(folder: Path, schema: dict[str, Any]) -> AsyncIterator[str]:
    """A DataFn server on SQLite on a free loopback port, in this event loop; yields its
    remote URL and stops it on exit."""
    from datafn.server import create_app
    from datafn.server.serve import uvicorn_server

    app = create_app(schema=schema, store=f"sqlite:///{folder / 'server.db'}", use_env=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn_server(app, host="127.0.0.1", port=port, log_level="warning")
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: server.serve(sockets=[sock]))
        with anyio.fail_after(30):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to await
                await anyio.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}/datafn"
        finally:
            server.begin_shutdown()
    sock.close()


async def clone_with_progress(client: Client, console: Console, label: str) -> Any:
    """Run a clone and draw one progress bar per resource from the engine's progress."""
    columns = (
        TextColumn(f"[bold]{escape(label)}[/bold] {{task.description}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    report: Any = None
    with Progress(*columns, console=console, transient=False) as progress:
        tasks: dict[str, Any] = {}

        async def clone() -> None:
            nonlocal report
            report = await client.sync.clone()

        async with anyio.create_task_group() as tg:
            tg.start_soon(clone)
            while report is None:
                for name, state in client.sync.download_progress.items():
                    if name not in tasks:
                        tasks[name] = progress.add_task(name, total=state.total)
                    progress.update(tasks[name], completed=state.done, total=state.total)
                await anyio.sleep(0.05)
        for name, state in client.sync.download_progress.items():
            if name in tasks:
                progress.update(tasks[name], completed=state.done, total=state.total or state.done)
    return report


def _show(console: Console, title: str, rows: list[dict[str, Any]], limit: int = 5) -> None:
    table = RichTable(title=title, title_justify="left")
    for column in ("id", "title", "done", "priority"):
        table.add_column(column)
    for row in rows[:limit]:
        table.add_row(*(escape(str(row.get(c, ""))) for c in ("id", "title", "done", "priority")))
    if len(rows) > limit:
        table.add_row(f"… {len(rows) - limit} more", "", "", "")
    console.print(table)


async def run_demo(
    folder: Path | None = None, records: int = 5000, console: Console | None = None
) -> None:
    """Run the demo in ``folder`` (default: a temporary folder)."""
    console = console or Console()
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="datafn-demo-")))
        folder.mkdir(parents=True, exist_ok=True)
        await _demo(folder, records, console)


async def _demo(folder: Path, records: int, console: Console) -> None:
    step = 0

    def say(text: str) -> None:
        nonlocal step
        step += 1
        console.rule(f"[bold cyan]{step}. {text}")

    console.print(f"[dim]working folder: {escape(str(folder))}[/dim]")
    say("A DataFn server on SQLite")
    async with serve_in_process(folder, DEMO_SCHEMA) as remote:
        console.print(f"serving [bold]{remote}[/bold] (store {escape(str(folder / 'server.db'))})")

        def client(name: str) -> Client:
            return Client(
                schema=DEMO_SCHEMA,
                remote=remote,
                store=f"sqlite:///{folder / (name + '.db')}",
                client_id=name,
                use_env=False,
            )

        async with client("laptop") as laptop, client("phone") as phone:
            rejected: list[Event] = []
            laptop.events.on("mutation_rejected", rejected.append)

            say(f"An administrator seeds {records:,} todos on the server")
            started = time.perf_counter()
            for first in range(0, records, 1000):
                batch = [
                    {"id": f"todo:{i:06}", "title": f"seeded task {i}", "priority": i % 6}
                    for i in range(first, min(first + 1000, records))
                ]
                await laptop.sync.seed({"todos": batch})
            console.print(f"seeded {records:,} records in {time.perf_counter() - started:.2f} s")

            say("Both clients clone (paged, resumable, with progress)")
            for name, c in (("laptop", laptop), ("phone", phone)):
                started = time.perf_counter()
                await clone_with_progress(c, console, name)
                took = time.perf_counter() - started
                console.print(
                    f"{name}: {await c.table('todos').count():,} todos in {took:.2f} s — "
                    f"local file {escape(str(folder / (name + '.db')))}"
                )

            say("The laptop works offline: writes go to its local store and changelog")
            await laptop.sync.notify("offline")
            written = [
                await laptop.table("todos").insert({"title": "buy milk", "priority": 3}),
                await laptop.table("todos").insert({"title": "call the plumber", "priority": 5}),
                await laptop.table("notes").insert({"body": "written on a train"}),
            ]
            await laptop.table("todos").merge({"id": "todo:000001", "done": True})
            status = await laptop.sync.status()
            console.print(
                f"laptop: online={status.online}, pending changes: [bold]{status.pending_changes}"
                "[/bold] (nothing has left the machine)"
            )
            _show(
                console,
                "laptop, local query: priority >= 3 and 'a' in title, highest priority first",
                [
                    r
                    for r in await laptop.table("todos").query(
                        {"priority": {"gte": 3}, "title": {"contains": "a"}},
                        sort="-priority",
                        limit=4,
                    )
                ],
            )

            say("Back online: the laptop pushes its changelog")
            await laptop.sync.notify("online")
            report = await laptop.sync.push()
            console.print(
                f"push: {report.applied} mutations applied in {report.batches} batch(es); "
                f"pending now {(await laptop.sync.status()).pending_changes}"
            )

            say("The phone pulls and sees them")
            pulled = await phone.sync.pull()
            console.print(f"pull: {pulled.changes} changes in {pulled.requests} request(s)")
            fresh = [await phone.table("todos").get(r["id"]) for r in written[:2]]
            _show(console, "phone, the laptop's new todos", [r for r in fresh if r])
            one = await phone.table("todos").get("todo:000001")
            console.print(f"phone sees todo:000001 done = {one and one['done']}")

            say("A guarded write that conflicts")
            target = written[0]["id"]
            await phone.table("todos").merge({"id": target, "title": "buy oat milk"})
            await phone.sync.push()
            console.print(f"phone renamed {target} to 'buy oat milk' and pushed")
            await laptop.table("todos").merge(
                {"id": target, "title": "buy 2 milk"}, guard={"title": "buy milk"}
            )
            console.print(
                "laptop writes title='buy 2 milk' only if the server still has 'buy milk'"
            )
            report = await laptop.sync.push()
            for event in rejected:
                error = event.context.error
                console.print(
                    f"[red]mutation_rejected[/red] {event.context.record_id}: "
                    f"{escape(getattr(error, 'code', ''))} at {escape(getattr(error, 'path', ''))} "
                    f"— {escape(getattr(error, 'message', str(error)))}"
                )
            after = await laptop.table("todos").get(target)
            console.print(
                f"the laptop's copy was repaired from the server: title = {after['title']!r}"  # type: ignore[index]
            )

            say("Reconcile: drift detection and repair")
            with sqlite3.connect(folder / "phone.db") as db:
                db.execute("DELETE FROM todos WHERE id < 'todo:000100'")
            console.print("100 rows vanish from the phone's SQLite file behind the client's back")
            result = await phone.sync.reconcile()
            table = RichTable(title="reconcile", title_justify="left")
            for column in ("resource", "local", "server", "repaired"):
                table.add_column(column)
            for name in result.local:
                table.add_row(
                    name,
                    f"{result.local[name]:,}",
                    f"{result.remote[name]:,}",
                    "re-cloned"
                    if name in result.recloned
                    else f"{result.repaired.get(name, 0):,} records",
                )
            console.print(table)
            console.print(
                f"phone now holds {await phone.table('todos').count():,} todos, "
                f"the server {result.remote['todos']:,}"
            )
            say("Done")
            console.print(
                "Every local write went through the changelog; every push was idempotent; "
                "both clients and the server agree."
            )
