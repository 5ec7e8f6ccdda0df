"""A DataFn server on a real socket in a background thread, for tests of clients and plugins.

::

    with LiveServer(create_app(store="memory://")) as server:
        async with Client(remote=server.remote, ...) as client:
            ...
        assert ("POST", "/datafn/push") in server.requests

The server runs uvicorn in its own thread and event loop, so a test's client talks to it over
real HTTP exactly as it would to a separate process; ``requests`` lists every HTTP request
the server received, which is how a test proves that nothing was sent.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

__all__ = ["LiveServer"]


class LiveServer:
    """Serves an ASGI application on ``127.0.0.1`` (an ephemeral port) until stopped.

    :param app: the ASGI application (``datafn.server.create_app(...)``).
    :param base_path: the DataFn base path of the application, for :attr:`remote`.
    """

    def __init__(self, app: Any, *, base_path: str = "/datafn", startup_timeout: float = 10.0):
        self.app = app
        self.base_path = base_path.rstrip("/")
        self.startup_timeout = startup_timeout
        #: ``(method, path)`` of every HTTP request received, in order.
        self.requests: list[tuple[str, str]] = []
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.url = ""

    @property
    def remote(self) -> str:
        """The base URL a client's ``remote`` setting takes."""
        return self.url + self.base_path

    @property
    def datafn(self) -> Any:
        """The :class:`~datafn.server.DatafnServer` behind the application, if it is one."""
        state = getattr(self.app, "state", None)
        return getattr(state, "datafn", None)

    def paths(self, method: str = "POST") -> list[str]:
        """The paths of the requests received with ``method``."""
        return [path for m, path in list(self.requests) if m == method]

    async def _recording(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            self.requests.append((scope.get("method", "WS"), scope["path"]))
        await self.app(scope, receive, send)

    def start(self) -> LiveServer:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        config = uvicorn.Config(
            self._recording,
            interface="asgi3",
            log_level="warning",
            lifespan="on",
            access_log=False,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="datafn-live-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the live DataFn server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = self._socket = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=15)
        if sock is not None:
            sock.close()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
