"""Opening a client imports only what opening needs: no SQLAlchemy to open a SQLite file, no
httpx (nor a TLS context) before the first request, no click or rich for the CLI plugins.

Start-up time itself is measured by bench/bench_startup.py; these tests check the behaviour
that keeps it low, in fresh interpreters.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from datafn.builtins.client_http import HttpTransport
from datafn.errors import TransportError
from datafn.testing.imports import modules_loaded
from tests.client.conftest import SCHEMA

pytest.importorskip("datafn_sqlmodel.client")

#: What the CLI plugins, the http transport and the SQLite store import only when used.
DEFERRED = ("sqlalchemy", "sqlmodel", "httpx", "rich", "click")

OPEN_AND_CLOSE = """
import json, sys
import anyio
import datafn

async def main():
    async with datafn.Client(schema=json.loads(sys.argv[1]), remote="http://127.0.0.1:1/x",
                             store=sys.argv[2]) as client:
        assert await client.table("todos").count() == int(sys.argv[3])
        await client.table("todos").insert({"title": "t"})

anyio.run(main)
"""


def open_and_close(store: str, count: int, cwd: Path) -> list[str]:
    """Open and close a client in a fresh interpreter (built-in plugins and the SQLite store):
    the DEFERRED modules it loaded."""
    return modules_loaded(
        OPEN_AND_CLOSE,
        DEFERRED,
        cwd=cwd,
        env={"DATAFN_PLUGINS": "sqlmodel-client"},
        args=[json.dumps(SCHEMA), store, str(count)],
    )


def test_opening_a_client_on_a_new_and_an_existing_file_defers_the_heavy_libraries(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path}/app.db"
    assert open_and_close(store, 0, tmp_path) == []  # creates the file and its tables
    assert open_and_close(store, 1, tmp_path) == []  # opens it again, keeping the write


def test_the_cli_commands_still_import_what_they_need(tmp_path: Path) -> None:
    # the probe can see them: the command line loads click, rich and the commands
    probe = (
        "from datafn.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
    )
    commands = (
        "click",
        "datafn.builtins.client_commands",
        "datafn.builtins.server_commands",
        "datafn.builtins.simulation_commands",
    )
    assert modules_loaded(probe, commands, cwd=tmp_path) == list(commands)
    result = subprocess.run(
        [sys.executable, "-m", "datafn", "--help"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("DATAFN_")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for command in ("demo", "sync", "serve", "simulate"):
        assert command in result.stdout


def _refused_port() -> int:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def certificate_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every load of trusted certificates into a TLS context, by method name."""
    calls: list[str] = []
    for method in ("load_verify_locations", "load_default_certs"):
        original = getattr(ssl.SSLContext, method)

        def record(
            self: Any, *args: Any, _name: str = method, _original: Any = original, **kwargs: Any
        ) -> Any:
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ssl.SSLContext, method, record)
    return calls


async def test_an_http_remote_loads_no_certificates(certificate_loads: list[str]) -> None:
    transport = HttpTransport(f"http://127.0.0.1:{_refused_port()}/datafn", timeout=5.0)
    with pytest.raises(TransportError, match="cannot reach"):
        await transport.request("status", None)
    await transport.aclose()
    assert certificate_loads == []


async def test_an_https_remote_verifies_with_the_default_authorities(
    certificate_loads: list[str],
) -> None:
    transport = HttpTransport(f"https://127.0.0.1:{_refused_port()}/datafn", timeout=5.0)
    assert certificate_loads == []  # not before the first request
    with pytest.raises(TransportError, match="cannot reach"):
        await transport.request("status", None)
    await transport.aclose()
    assert certificate_loads
