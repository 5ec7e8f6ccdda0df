"""The ``datafn serve`` command (the DataFn server under uvicorn), added to the command line by
the built-in plugin ``server-cli`` (:mod:`datafn.builtins.server_cli`)."""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click


@click.command()
@click.option(
    "--schema",
    callback=lambda _ctx, _param, value: _schema_option(value),
    help="Schema file (.json or .toml), or pydantic / SQLModel classes as an import path "
    "(myapp.models:Todo,Note, imported with the project's folder on sys.path); default: the "
    "schema setting.",
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
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Server processes sharing the port (more than 1: PostgreSQL and its notification "
    "bus); default: server.workers (1).",
)
@click.pass_obj
def serve(
    obj: Any,
    schema: str | None,
    database: str | None,
    host: str | None,
    port: int | None,
    base_path: str | None,
    production: bool | None,
    log_level: str,
    access_log: bool,
    workers: int | None,
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
        overrides["schema"] = schema
    runtime = obj.runtime(**overrides)
    app = create_app(runtime)
    settings = runtime.config.server
    if (workers or settings.workers) > 1:
        spec = _WorkerSpec(obj.pyproject, overrides, log_level, access_log, os.getpid())
        _serve_workers(spec, workers or settings.workers, app)
        return

    def ready() -> None:  # the store is open: say where it is and what is served
        click.echo(
            f"datafn: serving http://{settings.host}:{settings.port}{settings.base_path} "
            f"(store: {store_location(settings.database)})",
            err=True,
        )
        click.echo(f"datafn: {describe_mode(settings.production)}", err=True)

    http_server = uvicorn_server(app, log_level=log_level, access_log=access_log, freeze_gc=True)
    run_opened(http_server, ready=ready)


def _schema_option(value: str | None) -> str | None:
    """``--schema``: an import path as it is, else an existing file made absolute."""
    from datafn.models import is_import_path

    if value is None or is_import_path(value):
        return value
    path = Path(value)
    if not path.is_file():
        raise click.BadParameter(
            f"{value!r} is neither a schema file nor an import path (package.module:Class)"
        )
    return str(path.resolve())


def describe_mode(production: bool) -> str:
    """The line ``datafn serve`` prints at start about what its errors reveal."""
    if production:
        return "production mode: INTERNAL errors say only 'internal error'"
    return (
        "development mode: INTERNAL errors name the exception and its message "
        "(pass --production, or set server.production, on a server others can reach)"
    )


@dataclass(frozen=True)
class _WorkerSpec:
    """What a worker process of ``datafn serve --workers`` builds its server from: the same
    configuration file and command-line settings as the supervisor (the environment and the
    working directory are inherited)."""

    pyproject: Path | None
    overrides: dict[str, Any]
    log_level: str
    access_log: bool
    supervisor_pid: int


def _serve_workers(spec: _WorkerSpec, workers: int, app: Any) -> None:
    """Check the settings allow several processes, open the store once (its tables are
    created or migrated before any worker starts), bind the port, then supervise the
    workers (:mod:`datafn.server.workers`) until SIGINT or SIGTERM."""
    from datafn.config import store_location
    from datafn.server.serve import check_opens
    from datafn.server.workers import Supervisor, bind_sockets

    datafn = app.state.datafn
    settings = datafn.settings
    _check_shared(settings.database, settings.notification_bus, workers)
    check_opens(datafn)
    sockets = bind_sockets(settings.host, settings.port, workers)
    port = sockets[0].getsockname()[1]
    click.echo(
        f"datafn: serving http://{settings.host}:{port}{settings.base_path} "
        f"(store: {store_location(settings.database)}) with {workers} worker processes",
        err=True,
    )
    click.echo(f"datafn: {describe_mode(settings.production)}", err=True)
    supervisor = Supervisor(
        functools.partial(_run_worker, spec),
        sockets,
        workers,
        stop_timeout=settings.shutdown_timeout + 5,
        report=lambda line: click.echo(f"datafn: {line}", err=True),
    )
    stopped_by = supervisor.run()
    if stopped_by is not None:  # end as one server does: SIGINT → "interrupted" (130)
        signal.raise_signal(stopped_by)


def _check_shared(database: str, bus: str, workers: int) -> None:
    """Several processes need a database and a notification bus they all share."""
    from datafn.errors import ConfigError
    from datafn.registry import backend_name

    store = backend_name(database)
    if store in ("memory", "sqlite"):
        why = (
            "memory:// keeps the data inside each process"
            if store == "memory"
            else "an SQLite file takes one write at a time, which one process serves best"
        )
        raise ConfigError(
            f"{workers} worker processes need a PostgreSQL database ({why})",
            key="tool.datafn.server.workers",
        )
    if backend_name(bus) == "memory":
        raise ConfigError(
            f"{workers} worker processes need a notification bus they share: set "
            'notification-bus = "postgresql" in [tool.datafn.server] (with the in-process '
            "memory bus, WebSocket clients of one process would not hear of writes made "
            "through another)",
            key="tool.datafn.server.workers",
        )


def _run_worker(spec: _WorkerSpec, index: int, sock: socket.socket) -> None:
    """A worker process: the same server as ``datafn serve``, on the supervisor's socket."""
    from datafn.errors import DatafnError
    from datafn.runtime import Runtime
    from datafn.server.app import create_app
    from datafn.server.serve import run_opened, uvicorn_server

    def ready() -> None:
        click.echo(f"datafn: worker {index} ready (pid {os.getpid()})", err=True)

    try:
        runtime = Runtime.boot(pyproject=spec.pyproject, **spec.overrides)
        http_server = uvicorn_server(
            create_app(runtime),
            log_level=spec.log_level,
            access_log=spec.access_log,
            freeze_gc=True,
            parent_pid=spec.supervisor_pid,
        )
        run_opened(http_server, ready=ready, sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C before the server took the signals: the supervisor reports
        sys.exit(130)
    except Exception as exc:
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]  # type: ignore[assignment]
        what = str(exc) if isinstance(exc, DatafnError) else f"{type(exc).__name__}: {exc}"
        click.echo(f"datafn: worker {index}: Error: {what}", err=True)
        sys.exit(1)


@click.command()
@click.option(
    "--schema",
    callback=lambda _ctx, _param, value: _schema_option(value),
    help="Schema file or import path, as for datafn serve; default: the schema setting.",
)
@click.option("--database", help="Server store URL; default: server.database.")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    help="Rows one batch reads; default: server.retention.batch-size.",
)
@click.pass_obj
def compact(obj: Any, schema: str | None, database: str | None, batch_size: int | None) -> None:
    """Run retention once: delete idempotency records older than the idempotency window and
    compact the change log (see "Retention" in docs/server.md), in small batches, while
    servers keep serving."""
    import anyio

    from datafn.config import store_location
    from datafn.server.app import DatafnServer

    overrides: dict[str, Any] = {}
    if database is not None:
        overrides["server"] = {"database": database}
    if schema is not None:
        overrides["schema"] = schema
    runtime = obj.runtime(**overrides)

    async def run() -> Any:
        async with DatafnServer(runtime) as server:
            return await server.run_retention(batch_size=batch_size)

    report = anyio.run(run)
    click.echo(f"datafn compact ({store_location(runtime.config.server.database)}): {report}")
