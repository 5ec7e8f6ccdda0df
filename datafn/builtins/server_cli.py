"""Built-in plugin: the ``datafn serve`` command (the DataFn server under uvicorn)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from datafn.plugin import hookimpl


@click.command()
@click.option(
    "--schema",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Schema file (.json or .toml); default: the schema setting.",
)
@click.option(
    "--database",
    help="Server store URL (sqlite:///datafn.db, postgresql+psycopg://…, memory://); "
    "default: server.database.",
)
@click.option("--host", help="Interface to listen on; default: server.host (127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on; default: server.port (8787).")
@click.option("--base-path", help="Path prefix of the routes; default: server.base-path (/datafn).")
@click.option(
    "--production/--no-production",
    default=None,
    help="Hide internals in INTERNAL errors; default: server.production.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@click.pass_obj
def serve(
    obj: Any,
    schema: Path | None,
    database: str | None,
    host: str | None,
    port: int | None,
    base_path: str | None,
    production: bool | None,
    log_level: str,
    access_log: bool,
) -> None:
    """Run the DataFn server (Ctrl-C or SIGTERM: drain in-flight requests, then stop)."""
    from datafn.config import store_location
    from datafn.server.app import create_app
    from datafn.server.serve import run_opened, uvicorn_server

    server: dict[str, Any] = {
        key: value
        for key, value in (
            ("database", database),
            ("host", host),
            ("port", port),
            ("base_path", base_path),
            ("production", production),
        )
        if value is not None
    }
    overrides: dict[str, Any] = {}
    if server:
        overrides["server"] = server
    if schema is not None:
        overrides["schema"] = str(schema.resolve())
    runtime = obj.runtime(**overrides)
    app = create_app(runtime)
    settings = runtime.config.server

    def ready() -> None:  # the store is open: say where it is and what is served
        click.echo(
            f"datafn: serving http://{settings.host}:{settings.port}{settings.base_path} "
            f"(store: {store_location(settings.database)})",
            err=True,
        )
        click.echo(f"datafn: {describe_mode(settings.production)}", err=True)

    http_server = uvicorn_server(app, log_level=log_level, access_log=access_log, freeze_gc=True)
    run_opened(http_server, ready=ready)


def describe_mode(production: bool) -> str:
    """The line ``datafn serve`` prints at start about what its errors reveal."""
    if production:
        return "production mode: INTERNAL errors say only 'internal error'"
    return (
        "development mode: INTERNAL errors name the exception and its message "
        "(pass --production, or set server.production, on a server others can reach)"
    )


@hookimpl
def datafn_add_commands(cli: click.Group) -> None:
    cli.add_command(serve)
