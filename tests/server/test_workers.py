"""The supervisor of ``datafn serve --workers``: exits reported, crash loops stopped, the
listening socket, the refusal of settings several processes cannot share."""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from datafn.builtins.server_commands import _check_shared, _run_worker, _WorkerSpec
from datafn.errors import ConfigError, DatafnError
from datafn.server.workers import MAX_EXITS, Supervisor, bind_sockets, describe_exit


def test_exits_are_described_in_words() -> None:
    assert describe_exit(0) == "exit status 0"
    assert describe_exit(1) == "exit status 1"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(-signal.SIGTERM) == "killed by SIGTERM"
    assert describe_exit(None) == "still running"


def test_a_taken_port_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DatafnError, match=rf"^cannot listen on 127.0.0.1:{port}: address"):
            bind_sockets("127.0.0.1", port, 2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT balancing")
def test_each_worker_gets_a_socket_on_the_port_and_no_other_server_joins() -> None:
    sockets = bind_sockets("127.0.0.1", 0, 3)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(sockets) == 3 and len(ports) == 1
        with pytest.raises(DatafnError, match="address already in use"):
            bind_sockets("127.0.0.1", ports.pop(), 2)  # a second supervisor on the port
    finally:
        for sock in sockets:
            sock.close()


def test_workers_that_keep_exiting_stop_the_supervisor(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("datafn.server.workers.RESTART_DELAY", 0.1)
    broken = tmp_path / "pyproject.toml"
    broken.write_text("[tool.datafn\n")  # every worker fails to read its configuration
    spec = _WorkerSpec(broken, {}, "warning", False, os.getpid())
    sockets = bind_sockets("127.0.0.1", 0, 2)
    lines: list[str] = []
    supervisor = Supervisor(functools.partial(_run_worker, spec), sockets, 2, report=lines.append)
    with pytest.raises(DatafnError, match=rf"keep exiting \({MAX_EXITS} exits within 60 s, "):
        supervisor.run()
    assert len(lines) == MAX_EXITS
    assert all("exited (exit status 1)" in line for line in lines)
    assert "starting another in 0.1 s" in lines[0]
    assert all(s.fileno() == -1 for s in sockets)  # the supervisor's copies are closed
    assert not supervisor.processes
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # its handlers are gone
    errors = capfd.readouterr().err.splitlines()
    assert errors and all(e.startswith("datafn: worker ") and ": Error: " in e for e in errors)


@pytest.mark.parametrize(
    ("database", "bus", "expected"),
    [
        ("memory://", "postgresql", "memory:// keeps the data inside each process"),
        ("sqlite:///x.db", "postgresql", "an SQLite file takes one write at a time"),
        ("postgresql+psycopg://db/app", "memory", 'notification-bus = "postgresql"'),
    ],
)
def test_settings_several_processes_cannot_share_are_refused(
    database: str, bus: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match="2 worker processes need") as info:
        _check_shared(database, bus, 2)
    assert info.value.key == "tool.datafn.server.workers"
    assert expected in str(info.value)


def test_postgresql_with_its_bus_is_accepted() -> None:
    _check_shared("postgresql+psycopg://db/app", "postgresql", 4)
    _check_shared("postgresql+psycopg://db/app", "postgresql://other/bus", 4)
