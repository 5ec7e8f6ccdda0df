"""Several server processes on one port (``datafn serve --workers N``).

The supervisor (the process the user started) binds the port and starts N worker processes.
Workers are *spawned*, not forked: each imports datafn afresh and builds its server from the
same configuration file, environment and command-line settings, so no thread, database
connection or event loop of the supervisor ends up in a worker.

On Linux every worker gets a listening socket of its own, all bound to the port with
``SO_REUSEPORT``: the kernel spreads new connections evenly over them. (With one socket shared
by every worker, the first event loop to wake up accepts every connection waiting, so a burst
of clients, which then keep their connections, may all land on one worker.) A worker's socket
stays open in the supervisor while the worker is replaced, so connections the kernel gives it
meanwhile wait in its queue instead of being refused. Elsewhere the workers share one socket.

- SIGINT or SIGTERM to the supervisor: it closes its copies of the sockets, sends SIGTERM to every
  worker (each drains like a single ``datafn serve``: new requests get 503, requests in flight
  finish, WebSockets are closed with 1001) and waits at most ``stop_timeout`` seconds before
  killing what is left. The supervisor then ends as a single server would on that signal.
- A worker that exits while the server runs is reported (which one, its pid, how it ended)
  and replaced after a second. When workers keep exiting (:data:`MAX_EXITS` within
  :data:`EXIT_WINDOW` seconds) the supervisor stops the others and fails: a worker that
  cannot start would otherwise be restarted forever.
- A worker whose supervisor went away (killed with SIGKILL) drains and stops by itself
  (:class:`~datafn.server.serve.UvicornServer` checks its parent once a second).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from datafn.errors import DatafnError

__all__ = ["EXIT_WINDOW", "MAX_EXITS", "Supervisor", "bind_sockets", "describe_exit"]

log = logging.getLogger("datafn.server")

#: Worker exits within :data:`EXIT_WINDOW` seconds after which the supervisor gives up.
MAX_EXITS = 5
EXIT_WINDOW = 60.0
#: Seconds between a worker's exit and the start of its replacement.
RESTART_DELAY = 1.0

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def bind_sockets(host: str, port: int, count: int, *, backlog: int = 2048) -> list[socket.socket]:
    """``count`` listening TCP sockets on ``host:port`` (one per worker, ``SO_REUSEPORT``) on
    Linux, else one socket for every worker. Port 0 picks a free port for all of them.

    Raises :class:`~datafn.errors.DatafnError` in one line when the address cannot be had,
    also when it is taken by sockets that would accept sharing it: the port is first bound
    without ``SO_REUSEPORT``, so another server never silently shares this one's traffic.
    """
    shared = count == 1 or not sys.platform.startswith("linux")
    first = _listen(host, port, backlog, reuse_port=False)
    if shared:
        return [first]
    port = first.getsockname()[1]
    first.close()  # free again at once (never accepted on): only the check mattered
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(_listen(host, port, backlog, reuse_port=True))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _listen(host: str, port: int, backlog: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise DatafnError(
            f"cannot listen on {host}:{port}: {reason[:1].lower()}{reason[1:]}"
        ) from exc
    sock.set_inheritable(True)
    return sock


def describe_exit(code: int | None) -> str:
    """How a process ended, in words: ``exit status 1``, ``killed by SIGKILL``."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class Supervisor:
    """Runs ``workers`` processes of ``target(index, sock)`` and keeps them running.

    :param target: a module-level function (or a :func:`functools.partial` of one, with
        picklable arguments): it is called in each spawned worker with the worker's number
        (1 to ``workers``) and its listening socket, and serves until SIGTERM.
    :param sockets: from :func:`bind_sockets`: one per worker, or one that all share.
    :param report: receives one line for each event a person running the server should see
        (a worker that exited, the stop); default: the ``datafn.server`` logger.
    """

    def __init__(
        self,
        target: Callable[[int, socket.socket], object],
        sockets: list[socket.socket],
        workers: int,
        *,
        stop_timeout: float = 15.0,
        report: Callable[[str], None] | None = None,
    ) -> None:
        if workers < 1 or len(sockets) not in (1, workers):
            raise ValueError("workers must be at least 1, with one socket or one per worker")
        self.target = target
        self.sockets = sockets
        self.workers = workers
        self.stop_timeout = stop_timeout
        self.report = report or log.warning
        self.processes: dict[int, BaseProcess] = {}
        self._context = multiprocessing.get_context("spawn")
        self._exits: deque[float] = deque(maxlen=MAX_EXITS)
        self._restarts: dict[int, float] = {}  # worker number → when to start it again
        self._signal: int | None = None
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)

    def run(self) -> int | None:
        """Start the workers and supervise them until SIGINT or SIGTERM, then stop them all.

        Returns the signal that stopped the server. Raises
        :class:`~datafn.errors.DatafnError` when workers keep exiting.
        """
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        try:
            for index in range(1, self.workers + 1):
                self._start(index)
            self._supervise()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._wake_read)
            os.close(self._wake_write)
        return self._signal

    # -- internals ---------------------------------------------------------------------------

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self._signal is None:
            self._signal = sig
        with contextlib.suppress(OSError):  # the pipe is full: the loop is awake anyway
            os.write(self._wake_write, b"!")

    def _start(self, index: int) -> None:
        process = self._context.Process(
            target=self.target,
            args=(index, self.sockets[(index - 1) % len(self.sockets)]),
            name=f"datafn worker {index}",
        )
        process.start()
        self.processes[index] = process

    def _supervise(self) -> None:
        while self._signal is None:
            now = time.monotonic()
            for index, due in list(self._restarts.items()):
                if due <= now:
                    del self._restarts[index]
                    self._start(index)
            timeout = min((due - now for due in self._restarts.values()), default=None)
            waiting: list[Any] = [self._wake_read]
            waiting += [p.sentinel for p in self.processes.values()]
            multiprocessing.connection.wait(
                waiting, timeout=None if timeout is None else max(0.0, timeout)
            )
            if self._signal is not None:
                return
            for index, process in list(self.processes.items()):
                if process.exitcode is None:
                    continue
                del self.processes[index]
                self._exited(index, process.pid, process.exitcode)
                process.close()

    def _exited(self, index: int, pid: int | None, code: int | None) -> None:
        now = time.monotonic()
        self._exits.append(now)
        how = describe_exit(code)
        if len(self._exits) == MAX_EXITS and now - self._exits[0] <= EXIT_WINDOW:
            self.report(f"worker {index} (pid {pid}) exited ({how})")
            raise DatafnError(
                f"the worker processes keep exiting ({MAX_EXITS} exits within "
                f"{EXIT_WINDOW:g} s, the last with {how}); stopped"
            )
        self.report(
            f"worker {index} (pid {pid}) exited ({how}); starting another in {RESTART_DELAY:g} s"
        )
        self._restarts[index] = now + RESTART_DELAY

    def _stop_all(self) -> None:
        """Close the supervisor's sockets, SIGTERM every worker, wait, kill what is left."""
        self._restarts.clear()
        for sock in self.sockets:
            sock.close()  # the workers' copies keep listening until they stop
        running = [p for p in self.processes.values() if p.exitcode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        deadline = time.monotonic() + self.stop_timeout
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
        for index, process in list(self.processes.items()):
            if process.exitcode is None:
                self.report(
                    f"worker {index} (pid {process.pid}) did not stop within "
                    f"{self.stop_timeout:g} s; killed"
                )
                process.kill()
                process.join()
            process.close()
        self.processes.clear()
