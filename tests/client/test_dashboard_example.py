"""docs/examples/todo_dashboard.py, headless, against ``datafn serve`` given the example's
model as an import path: a write made by another client appears on the dashboard."""

from __future__ import annotations

import importlib.util
import io
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
from rich.console import Console

from datafn import Client
from datafn.testing.process import ServerProcess

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "todo_dashboard.py"
FAST_RECONNECT = {"base_delay": 0.05, "multiplier": 2.0, "max_delay": 1.0, "jitter": 0.05}

pytest.importorskip("datafn_websockets", reason="the dashboard needs datafn-websockets")


def load_example(folder: Path) -> ModuleType:
    """The example copied into ``folder`` (the project) and imported from there."""
    shutil.copy(EXAMPLE, folder / "todo_dashboard.py")
    spec = importlib.util.spec_from_file_location("todo_dashboard", folder / "todo_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def client(remote: str, name: str, model: Any, *, ws: bool) -> Client:
    return Client(
        schema=[model],
        remote=remote,
        store="memory://",
        client_id=name,
        use_env=False,
        ws=ws,
        ws_reconnect=FAST_RECONNECT,
    )


async def test_the_dashboard_shows_a_remote_edit(tmp_path: Path) -> None:
    example = load_example(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[tool.datafn]\n", encoding="utf-8")
    frames: list[list[str]] = []
    changed = anyio.Event()

    def on_frame(todos: list[Any]) -> None:
        nonlocal changed
        frames.append([todo.title for todo in todos])
        changed.set()

    async def next_frame() -> list[str]:
        nonlocal changed
        with anyio.fail_after(20):
            await changed.wait()
        changed = anyio.Event()
        return frames[-1]

    output = io.StringIO()
    console = Console(file=output, force_terminal=True, color_system=None, width=100)
    # the server imports the model from the project folder: --schema todo_dashboard:Todo
    with ServerProcess(
        Path("todo_dashboard:Todo"), database=f"sqlite:///{tmp_path / 's.db'}", cwd=tmp_path
    ) as server:
        async with (
            client(server.remote, "dashboard", example.Todo, ws=True) as dashboard,
            client(server.remote, "writer", example.Todo, ws=False) as writer,
            anyio.create_task_group() as tasks,
        ):
            connected = anyio.Event()
            dashboard.events.on("ws_connected", lambda event: connected.set())
            await dashboard.sync.start()
            with anyio.fail_after(20):
                await connected.wait()
            tasks.start_soon(example.show, dashboard, console, on_frame)
            assert await next_frame() == []

            todos = writer.table(example.Todo)
            await writer.sync.clone()
            written = await todos.insert(example.Todo(title="remote edit", priority=3))
            await todos.insert(example.Todo(title="another", priority=1))
            await writer.sync.push()
            shown = await next_frame()
            while shown != ["remote edit", "another"]:  # both may come in one pull or two
                shown = await next_frame()

            await todos.merge({"id": written.id, "done": True})  # leaves the query
            await writer.sync.push()
            assert await next_frame() == ["another"]
            tasks.cancel_scope.cancel()
    screen = output.getvalue()
    assert "remote edit" in screen and "Open todos: 2" in screen and "Open todos: 1" in screen
    sys.modules.pop("todo_dashboard", None)
