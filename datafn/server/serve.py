"""Running the server under uvicorn, with the protocol's graceful shutdown.

On the first SIGINT/SIGTERM the DataFn server starts draining: requests that arrive from then
on are answered 503 ``SERVICE_UNAVAILABLE`` while uvicorn stops listening and lets the requests
in flight finish (for at most ``shutdown-timeout`` seconds); then the lifespan closes the store.

The server also bounds what one client can hold: header bytes, the time to send a request and
the number of connections (:mod:`datafn.server.connections`, ``limit_concurrency``), and keeps
credentials out of uvicorn's debug logs (:mod:`datafn.server.logs`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import socket
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from datafn.config import mask_url
from datafn.errors import DatafnError, StoreError
from datafn.registry import backend_name
from datafn.server.app import DatafnServer
from datafn.server.connections import http_protocol
from datafn.server.logs import install_log_filters

__all__ = ["UvicornServer", "check_opens", "max_connections", "run_opened", "uvicorn_server"]

log = logging.getLogger("datafn.server")


class UvicornServer(uvicorn.Server):
    """A uvicorn server that puts the DataFn server into draining mode on shutdown."""

    def __init__(
        self,
        config: uvicorn.Config,
        datafn: DatafnServer | None = None,
        *,
        freeze_gc: bool = False,
        parent_pid: int | None = None,
    ) -> None:
        super().__init__(config)
        self.datafn = datafn
        self.freeze_gc = freeze_gc
        #: a worker of ``datafn serve --workers``: its supervisor's pid, checked once a second
        self.parent_pid = parent_pid
        self._draining_task: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self.freeze_gc:
            # In a process that only serves, what is alive when the server starts (modules,
            # classes, the schema, the application) lives as long as the process: keep the
            # collector from walking it again on every full collection, which otherwise
            # pauses every connection (noticeable in fan-outs to thousands of WebSockets).
            gc.collect()
            gc.freeze()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._drain()
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if (
            self.parent_pid is not None
            and counter % 10 == 0
            and not self.should_exit
            and os.getppid() != self.parent_pid
        ):
            # the supervisor was killed: nobody would ever stop this worker
            log.warning("the datafn serve supervisor went away; stopping this worker")
            self.begin_shutdown()
        return await super().on_tick(counter)

    def begin_shutdown(self) -> None:
        """What a signal does, for callers that are not signal handlers (threads, tests)."""
        self._drain()
        self.should_exit = True

    def _drain(self) -> None:
        """Refuse new requests and run the shutdown callbacks (WebSockets get 1001) before
        uvicorn closes its connections itself."""
        if self.datafn is None:
            return
        self.datafn.begin_shutdown()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on the server's loop: the lifespan runs the callbacks
        self._draining_task = loop.create_task(self.datafn.run_shutdown_callbacks())


def max_connections(configured: int | None) -> int:
    """``max-connections``, or by default the process's open-file limit less 100 (kept for
    the database, the log files and the listening sockets)."""
    if configured is not None:
        return configured
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # pragma: no cover - not on POSIX
        return 1000
    if soft == resource.RLIM_INFINITY:
        return 65_000
    return max(10, soft - 100)


def uvicorn_server(
    app: Starlette,
    *,
    host: str | None = None,
    port: int | None = None,
    log_level: str = "info",
    access_log: bool = False,
    freeze_gc: bool = False,
    parent_pid: int | None = None,
    **options: Any,
) -> UvicornServer:
    """A :class:`UvicornServer` for an app made by :func:`~datafn.server.create_app`.

    ``host``/``port`` default to the ``server.host``/``server.port`` settings; ``options`` go to
    :class:`uvicorn.Config`. ``freeze_gc`` (for a process that only serves, as ``datafn
    serve``) moves everything alive at start-up out of the garbage collector's generations;
    ``parent_pid`` (a worker of ``datafn serve --workers``) stops the server when that process
    is no longer its parent.
    """
    datafn: DatafnServer = app.state.datafn
    settings = datafn.settings
    # WebSocket keep-alive and frame bounds of the protocol (the ASGI server owns the pings)
    options.setdefault("ws_ping_interval", settings.ping_interval)
    options.setdefault("ws_ping_timeout", settings.ping_timeout)
    options.setdefault("ws_max_size", settings.limits.max_ws_message_bytes)
    # bounds on hostile connections (see datafn.server.connections)
    options.setdefault(
        "http",
        http_protocol(
            max_header_bytes=settings.limits.max_header_bytes, read_timeout=settings.read_timeout
        ),
    )
    options.setdefault("h11_max_incomplete_event_size", settings.limits.max_header_bytes)
    options.setdefault("timeout_keep_alive", max(1, round(settings.keep_alive_timeout)))
    options.setdefault("limit_concurrency", max_connections(settings.limits.max_connections))
    config = uvicorn.Config(
        app,
        host=host or settings.host,
        port=settings.port if port is None else port,
        lifespan="on",
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout)),
        **options,
    )
    install_log_filters()  # tokens out of debug logs, clients' UTF-8 errors in one line
    return UvicornServer(config, datafn, freeze_gc=freeze_gc, parent_pid=parent_pid)


def run_opened(
    server: UvicornServer,
    *,
    ready: Callable[[], None] = lambda: None,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Run ``server`` like ``server.run(sockets)``, but open the DataFn server's store and bus
    first, on the loop that then serves: a database that cannot be reached fails before
    anything listens, as one :class:`~datafn.errors.StoreError`
    (``cannot connect to postgresql+psycopg://app:***@db:5432/app: connection refused``).
    ``ready()`` is called once they are open, right before uvicorn starts.
    """
    datafn = server.datafn

    async def main() -> None:
        if datafn is not None:
            await _open(datafn)
        try:
            ready()
            await server.serve(sockets=sockets)
        finally:
            if datafn is not None:  # the lifespan closed it already, unless uvicorn never started
                await datafn.aclose()

    get_loop_factory = getattr(server.config, "get_loop_factory", None)
    if get_loop_factory is None:  # uvicorn before 0.36
        server.config.setup_event_loop()
        asyncio.run(main())
        return
    with asyncio.Runner(loop_factory=get_loop_factory()) as runner:
        runner.run(main())


def check_opens(datafn: DatafnServer) -> None:
    """Open the DataFn server's store and bus (which creates or migrates the store's tables),
    then close them: what ``datafn serve --workers`` does before it starts any worker, so a
    database that cannot be reached fails once, in one line, as for :func:`run_opened`."""

    async def main() -> None:
        await _open(datafn)
        await datafn.aclose()

    asyncio.run(main())


async def _open(datafn: DatafnServer) -> None:
    try:
        await datafn.open()
    except DatafnError:
        raise
    except Exception as exc:
        raise StoreError(_cannot_open(datafn, exc)) from exc


def _cannot_open(datafn: DatafnServer, exc: BaseException) -> str:
    """One line: what could not be opened (password masked) and the driver's reason."""
    url = getattr(datafn.store, "url", None)
    if not isinstance(url, str):
        url = datafn.settings.database
    cause: BaseException = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's
    lines = str(cause).strip().splitlines()
    reason = lines[0] if lines else type(cause).__name__
    reason = re.sub(r"^\([\w.]+\)\s*", "", reason)  # "(psycopg.OperationalError) …"
    if "failed: " in reason:  # "connection … port 5433 failed: Connection refused"
        reason = reason.rsplit("failed: ", 1)[1]
    reason = reason[:1].lower() + reason[1:]
    verb = "open" if backend_name(url) in ("sqlite", "memory") else "connect to"
    return f"cannot {verb} {mask_url(url)}: {reason}"
