"""``datafn serve`` in a child process, for tests that cross a real process boundary.

::

    with ServerProcess(schema_file, database="sqlite:///x.db", cwd=tmp_path) as server:
        async with Client(remote=server.remote, ...) as client:
            ...
        server.restart()      # same port and database: a server restart as clients see it

Readiness is polled on ``GET {remote}/health`` (bounded by ``startup_timeout``); stopping sends
SIGTERM (graceful drain) and kills the process if it does not end in time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx

__all__ = ["ServerProcess", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A ``datafn serve`` child process on ``127.0.0.1``.

    :param schema: the schema file.
    :param database: the server store URL.
    :param cwd: the working directory (put a ``pyproject.toml`` with ``[tool.datafn.server]``
        there for more settings).
    :param port: default: a free port, kept across :meth:`restart`.
    :param env: extra environment variables (``DATAFN_*`` of the test process are not passed).
    :param workers: ``datafn serve --workers``: server processes behind the one port.
    """

    def __init__(
        self,
        schema: Path,
        *,
        database: str,
        cwd: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
        startup_timeout: float = 30.0,
        workers: int = 1,
    ) -> None:
        self.schema = schema
        self.database = database
        self.cwd = cwd
        self.port = port or free_port()
        self.remote = f"http://127.0.0.1:{self.port}/datafn"
        self.startup_timeout = startup_timeout
        self.workers = workers
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFN_")}
        self._env.update(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.log_path = cwd / f"server-{self.port}.log"

    def start(self) -> ServerProcess:
        command = [
            sys.executable, "-m", "datafn", "serve",
            "--schema", str(self.schema),
            "--database", self.database,
            "--port", str(self.port),
            "--log-level", "warning",
        ]  # fmt: skip
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, cwd=self.cwd, env=self._env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                if httpx.get(f"{self.remote}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"datafn serve exited early:\n{self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"datafn serve did not start in time:\n{self.output()}")
            time.sleep(0.05)

    def stop(self, *, timeout: float = 20.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL after ``timeout``; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stop()

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
