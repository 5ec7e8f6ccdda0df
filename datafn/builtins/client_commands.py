"""The client's commands, ``datafn demo`` and ``datafn sync`` (added to the command line by the
``client-cli`` plugin, :mod:`datafn.builtins.client_cli`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import click
from rich.console import Console

from datafn.errors import ConfigError

__all__ = ["demo", "sync"]


@click.command()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the server's and clients' SQLite files here (default: a temporary folder).",
)
@click.option("--records", type=click.IntRange(10, 1_000_000), default=5000, show_default=True)
def demo(folder: Path | None, records: int) -> None:
    """Run a server and two clients on SQLite and narrate what sync does."""
    from datafn.builtins.client_demo import run_demo

    anyio.run(run_demo, folder, records)


@click.command()
@click.option("--remote", help="Server base URL, e.g. http://127.0.0.1:8787/datafn.")
@click.option(
    "--schema",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Schema file (.json or .toml); default: the schema setting.",
)
@click.option("--store", help="Local store URL, e.g. sqlite:///mirror.db; default: store.")
@click.option("--client-id", help="Default: kept in the store.")
@click.option("--once", is_flag=True, help="Clone, pull and push once, then exit.")
@click.option(
    "--pull-interval",
    type=click.FloatRange(min=0.05),
    default=5.0,
    show_default=True,
    help="Pull every N seconds, so other writers' changes arrive without a real-time channel.",
)
@click.option("--ws", is_flag=True, help="Follow the server's WebSocket (datafn-websockets).")
@click.pass_obj
def sync(
    obj: Any,
    remote: str | None,
    schema: Path | None,
    store: str | None,
    client_id: str | None,
    once: bool,
    pull_interval: float,
    ws: bool,
) -> None:
    """Mirror a server into a local store: clone (with a progress bar), then pull and push
    until interrupted (Ctrl-C): pulls every --pull-interval seconds, and at once on the
    WebSocket's announcements with --ws."""
    settings = {"pull_interval": pull_interval, **({"ws": True} if ws else {})}
    anyio.run(_sync, obj, remote, schema, store, client_id, once, settings)


async def _sync(
    obj: Any,
    remote: str | None,
    schema: Path | None,
    store: str | None,
    client_id: str | None,
    once: bool,
    settings: dict[str, Any],
) -> None:
    from datafn.builtins.client_demo import clone_with_progress
    from datafn.client import Client
    from datafn.config import mask_url, store_location

    console = Console(stderr=True)
    pyproject = getattr(obj, "pyproject", None)
    if remote is None and not obj.runtime().config.sync.remote:
        # before the local store is opened: a failed command leaves no file behind
        raise ConfigError(
            "no remote to sync with: pass --remote http://host:8787/datafn or set `remote` "
            "in [tool.datafn.sync]",
            key="tool.datafn.sync.remote",
        )
    await _check_reachable(remote or obj.runtime().config.sync.remote)
    async with Client(
        schema=schema,
        remote=remote,
        store=store,
        client_id=client_id,
        pyproject=pyproject,
        sync=settings,
    ) as client:
        config = client.runtime.config
        console.print(
            f"syncing {mask_url(config.sync.remote or '')} into "
            f"{store_location(config.settings.store)}",
            highlight=False,
            soft_wrap=True,  # a path stays on one line, whatever the terminal's width
        )
        client.events.on(
            "sync_failed",
            lambda e: console.print(f"[red]{e.context.phase} failed:[/red] {e.context.error}"),
        )
        client.events.on(
            "connectivity_changed",
            lambda e: console.print("online" if e.context.online else "[yellow]offline[/yellow]"),
        )
        started = time.perf_counter()
        await clone_with_progress(client, console, "clone")
        console.print(f"cloned in {time.perf_counter() - started:.2f} s")
        if once:
            await client.sync.sync_all()
        else:
            await client.sync.start()
            console.print("syncing; Ctrl-C to stop")
            await anyio.sleep_forever()
        status = await client.sync.status()
        console.print(
            f"cursors {status.cursors}; pending changes {status.pending_changes}; "
            f"{'online' if status.online else 'offline'}"
        )


async def _check_reachable(remote: str) -> None:
    """One request to the remote before the local store is opened, so that a server that
    cannot be reached fails the command without leaving a new store file behind. Any HTTP
    answer counts as reachable (authentication and the rest are the sync's business)."""
    import httpx

    from datafn.config import mask_url
    from datafn.errors import TransportError

    url = remote.rstrip("/") + "/status"
    try:
        async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as http:
            await http.get(url)
    except httpx.HTTPError as exc:
        raise TransportError(
            f"cannot reach {mask_url(url)} ({type(exc).__name__}): is the server running, "
            "and is the remote URL right?",
            path="$",
        ) from None
