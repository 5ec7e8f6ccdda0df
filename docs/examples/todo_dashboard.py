"""A live terminal dashboard of the open todos (described in docs/dashboard.md).

Run it in the tutorial's project folder, next to a running server with real-time updates
(``datafn serve``, datafn-websockets installed on both sides)::

    python todo_dashboard.py

It watches the open todos and redraws the table whenever the result changes: a write made
here, or one made anywhere else, which the server announces over the WebSocket and the client
pulls at once. Ctrl-C stops it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import ClassVar

import anyio
from pydantic import BaseModel, Field
from rich.console import Console
from rich.live import Live
from rich.table import Table

import datafn
from datafn.models import ResourceOptions


class Todo(BaseModel):
    """The tutorial's ``todos`` resource as a pydantic model."""

    __datafn__: ClassVar[ResourceOptions] = {"name": "todos", "id_prefix": "todo"}

    id: str | None = None
    title: str = Field(max_length=200)
    done: bool = False
    priority: int = Field(default=1, ge=0, le=5)


def render(todos: list[Todo], caption: str = "") -> Table:
    """The table the dashboard shows: open todos, most important first."""
    table = Table(title=f"Open todos: {len(todos)}", caption=caption, expand=True)
    table.add_column("priority", justify="right", width=8)
    table.add_column("title", ratio=1)
    table.add_column("id", style="dim", no_wrap=True)
    for todo in todos:
        table.add_row("*" * todo.priority or "-", todo.title, todo.id or "")
    return table


async def show(
    client: datafn.Client,
    console: Console,
    on_frame: Callable[[list[Todo]], None] | None = None,
) -> None:
    """Redraw the open todos each time they change, until cancelled.

    ``on_frame(todos)`` is called after each redraw (tests use it to know what is shown).
    """
    with Live(render([]), console=console, auto_refresh=False) as live:
        watched = client.table(Todo).watch({"done": False}, sort=["-priority", "title"])
        async for todos in watched:
            status = await client.sync.status()
            live.update(render(todos, f"{status.state}, {client.client_id}"), refresh=True)
            if on_frame is not None:
                on_frame(todos)


async def main() -> None:
    # the remote and the local store come from [tool.datafn]; ws=True: real-time updates
    async with datafn.Client(schema=[Todo], ws=True) as client:
        await client.sync.start()
        await show(client, Console())


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(main)
