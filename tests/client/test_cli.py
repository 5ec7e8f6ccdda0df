"""``datafn demo`` and ``datafn sync``."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from datafn.builtins.client_demo import run_demo
from datafn.builtins.client_phases import _clone_page
from datafn.errors import TransportError
from tests.client.conftest import SCHEMA
from tests.client.server_process import ServerProcess

pytestmark = pytest.mark.slow


async def test_demo_tells_the_whole_story(tmp_path: Path) -> None:
    out = io.StringIO()
    await run_demo(tmp_path, records=300, console=Console(file=out, width=120))
    text = out.getvalue()
    for expected in (
        "seeded 300 records",
        "laptop: 300 todos",
        "pending changes: 4",
        "push: 4 mutations applied",
        "phone sees todo:000001 done = True",
        "mutation_rejected",
        "CONFLICT",
        "repaired from the server: title = 'buy oat milk'",
        "phone now holds 302 todos, the server 302",
    ):
        assert expected in text, expected
    for name in ("server.db", "laptop.db", "phone.db"):
        assert (tmp_path / name).exists()


def test_sync_command_mirrors_a_server_into_sqlite(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "server", SCHEMA) as server:
        rows = [{"id": f"t{i:04}", "title": f"task {i}"} for i in range(1500)]
        assert httpx.post(f"{server.remote}/seed", json={"data": {"todos": rows}}).json()["ok"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFN_")}
        mirror = tmp_path / "mirror.db"
        result = subprocess.run(
            [
                sys.executable, "-c", "from datafn.cli import main; main()", "sync",
                "--remote", server.remote, "--schema", str(server.schema),
                "--store", f"sqlite:///{mirror}", "--once",
            ],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "cloned in" in result.stderr
        with sqlite3.connect(mirror) as db:
            assert db.execute("SELECT count(*) FROM todos").fetchone() == (1500,)
            assert db.execute("SELECT title FROM todos WHERE id = 't0042'").fetchone() == (
                "task 42",
            )


def test_clone_pages_are_checked_without_walking_every_value() -> None:
    good = {
        "ok": True,
        "result": {
            "data": {"t": [{"id": "a", "x": 1}]},
            "cursors": {"t": "7"},
            "next": {"t": None},
        },
    }
    page = _clone_page(good)
    assert page.data["t"][0]["id"] == "a" and page.cursors == {"t": "7"}
    for broken in (
        {**good, "result": {**good["result"], "cursors": {"t": "-1"}}},
        {**good, "result": {**good["result"], "data": {"t": [{"x": 1}]}}},
        {"ok": True},
        [],
    ):
        with pytest.raises(TransportError):
            _clone_page(json.loads(json.dumps(broken)))


def test_sync_without_a_remote_is_one_line_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "fresh"
    folder.mkdir()
    (folder / "schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    monkeypatch.chdir(folder)
    for name in [n for n in os.environ if n.startswith("DATAFN_")]:
        monkeypatch.delenv(name)
    result = subprocess.run(
        [sys.executable, "-m", "datafn", "sync", "--schema", "schema.json", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "remote" in lines[0], lines
    assert sorted(p.name for p in folder.iterdir()) == ["schema.json"]


def test_sync_with_the_server_down_is_one_line_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path / "fresh"
    folder.mkdir()
    (folder / "schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    monkeypatch.chdir(folder)
    for name in [n for n in os.environ if n.startswith("DATAFN_")]:
        monkeypatch.delenv(name)
    result = subprocess.run(
        [
            *(sys.executable, "-m", "datafn", "sync", "--schema", "schema.json", "--once"),
            *("--remote", f"http://127.0.0.1:{port}/datafn", "--store", "sqlite:///mirror.db"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert f"cannot reach http://127.0.0.1:{port}/datafn/status" in lines[0]
    assert sorted(p.name for p in folder.iterdir()) == ["schema.json"]


def test_the_sync_command_mirrors_foreign_writes_without_a_websocket(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "server", SCHEMA) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFN_")}
        mirror = tmp_path / "mirror.db"
        log = tmp_path / "sync.log"
        command = [
            sys.executable, "-m", "datafn", "sync", "--remote", server.remote,
            "--schema", str(server.schema), "--store", f"sqlite:///{mirror}",
            "--pull-interval", "0.1",
        ]  # fmt: skip
        with log.open("w") as output:
            process = subprocess.Popen(command, stderr=output, env=env, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 60
            while "syncing" not in log.read_text() and time.monotonic() < deadline:
                assert process.poll() is None, log.read_text()
                time.sleep(0.05)
            write = {"data": {"todos": [{"id": "elsewhere", "title": "written elsewhere"}]}}
            assert httpx.post(f"{server.remote}/seed", json=write).json()["ok"]
            found = None
            while found is None and time.monotonic() < deadline:
                assert process.poll() is None, log.read_text()
                db = sqlite3.connect(mirror)
                try:
                    found = db.execute("SELECT title FROM todos WHERE id = 'elsewhere'").fetchone()
                finally:
                    db.close()
                time.sleep(0.05)
            assert found == ("written elsewhere",)
        finally:
            process.terminate()
            process.wait(30)


def test_sync_uses_the_store_next_to_the_pyproject_and_says_where(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "server", SCHEMA) as server:
        project = tmp_path / "project"
        (project / "scripts").mkdir(parents=True)
        (project / "schema.json").write_text(json.dumps(SCHEMA))
        (project / "pyproject.toml").write_text(
            '[tool.datafn]\nschema = "schema.json"\nstore = "sqlite:///mirror.db"\n'
            f'[tool.datafn.sync]\nremote = "{server.remote}"\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFN_")}
        result = subprocess.run(
            [sys.executable, "-m", "datafn", "sync", "--once"],
            capture_output=True, text=True, env=env, cwd=project / "scripts", timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"into SQLite file {project / 'mirror.db'}" in result.stderr
        assert (project / "mirror.db").exists()
        assert not (project / "scripts" / "mirror.db").exists()
