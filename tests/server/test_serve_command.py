"""``datafn serve`` as a user runs it: which database it opens, and what it says when it cannot."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from datafn.testing.process import free_port

from .conftest import SCHEMA


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DATAFN_")}


def test_serve_opens_the_database_next_to_the_pyproject_and_says_where(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "schema.json").write_text(json.dumps(SCHEMA))
    (app / "pyproject.toml").write_text(
        '[tool.datafn]\nschema = "schema.json"\n'
        '[tool.datafn.server]\ndatabase = "sqlite:///notes-server.db"\n'
    )
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "datafn", "--config", "app/pyproject.toml", "serve",
             "--port", str(port), "--log-level", "warning"],
            cwd=tmp_path, env=_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/datafn/status", timeout=2).is_success:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(20)
    assert (app / "notes-server.db").exists()
    assert not (tmp_path / "notes-server.db").exists()
    assert f"(store: SQLite file {app / 'notes-server.db'})" in log.read_text()


def _closed_port() -> int:
    port = 5433
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            pytest.skip(f"something listens on 127.0.0.1:{port}")
    return port


def test_serve_on_an_unreachable_database_is_one_line_and_serves_nothing(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    port = _closed_port()
    url = f"postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:{port}/test"
    result = subprocess.run(
        [sys.executable, "-m", "datafn", "serve", "--schema", "schema.json", "--database", url,
         "--port", str(free_port())],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"Error: cannot connect to postgresql+psycopg://postgres:***@127.0.0.1:{port}/test: "
        "connection refused"
    ]


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_names_its_postgresql_database_with_the_password_masked(
    tmp_path: Path, postgres_url: str, workers: int
) -> None:
    from datafn.testing.process import ServerProcess

    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "pyproject.toml").write_text(
        '[tool.datafn.server]\nnotification-bus = "postgresql"\n'
    )
    url = postgres_url.replace("postgres@", "postgres:s3cret-pw@")  # trust: any password
    with ServerProcess(
        tmp_path / "schema.json", database=url, cwd=tmp_path, workers=workers
    ) as server:
        assert httpx.get(f"{server.remote}/health", timeout=5).json() == {"ok": True}
    log = server.log_path.read_text()
    masked = url.replace("s3cret-pw", "***")
    assert f"(store: {masked})" in log
    assert "s3cret-pw" not in log
