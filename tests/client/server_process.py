"""A real DataFn server in a subprocess (``datafn serve`` on SQLite) on a free loopback port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``with ServerProcess(folder, schema) as server: server.remote`` — started and ready."""

    def __init__(self, folder: Path, schema: dict[str, Any], *, database: str | None = None):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.schema_path = folder / "schema.json"
        self.schema_path.write_text(json.dumps(schema))
        self.database_path = folder / "server.db"
        self.database = database or f"sqlite:///{self.database_path}"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def remote(self) -> str:
        return f"http://127.0.0.1:{self.port}/datafn"

    def start(self, timeout: float = 30.0) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFN_")}
        self.log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from datafn.cli import main; main()",
                "serve",
                "--schema",
                str(self.schema_path),
                "--database",
                self.database,
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=self.folder,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {self.process.returncode}: "
                    + (self.folder / "server.log").read_text(errors="replace")[-2000:]
                )
            try:
                response = httpx.get(f"{self.remote}/status", timeout=1.0)
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer within {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
            self.log.close()

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def records(self, resource: str, namespace: str = "datafn") -> dict[str, dict[str, Any]]:
        """The server's records of ``resource``, read from its SQLite database."""
        import sqlite3

        with sqlite3.connect(self.database_path) as db:
            rows = db.execute(
                f'SELECT id, data FROM "datafn_records_{resource}" WHERE namespace = ?',
                (namespace,),
            ).fetchall()
        return {row[0]: json.loads(row[1]) for row in rows}

    def change_count(self, namespace: str = "datafn") -> int:
        import sqlite3

        with sqlite3.connect(self.database_path) as db:
            return int(
                db.execute(
                    "SELECT count(*) FROM datafn_changes WHERE namespace = ?", (namespace,)
                ).fetchone()[0]
            )
