"""A real DataFn server in a subprocess (``datafn serve`` on SQLite), for the client tests:
:class:`datafn.testing.process.ServerProcess` plus a schema file and a look into its database."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from datafn.testing.process import ServerProcess as _ServerProcess


class ServerProcess(_ServerProcess):
    """``with ServerProcess(folder, schema) as server: server.remote`` — started and ready."""

    def __init__(self, folder: Path, schema: dict[str, Any], *, database: str | None = None):
        folder.mkdir(parents=True, exist_ok=True)
        schema_path = folder / "schema.json"
        schema_path.write_text(json.dumps(schema))
        self.folder = folder
        self.database_path = folder / "server.db"
        super().__init__(
            schema_path, database=database or f"sqlite:///{self.database_path}", cwd=folder
        )

    def records(self, resource: str, namespace: str = "datafn") -> dict[str, dict[str, Any]]:
        """The server's records of ``resource``, read from its SQLite database."""
        with sqlite3.connect(self.database_path) as db:
            rows = db.execute(
                f'SELECT id, data FROM "datafn_records_{resource}" WHERE namespace = ?',
                (namespace,),
            ).fetchall()
        return {row[0]: json.loads(row[1]) for row in rows}

    def change_count(self, namespace: str = "datafn") -> int:
        with sqlite3.connect(self.database_path) as db:
            return int(
                db.execute(
                    "SELECT count(*) FROM datafn_changes WHERE namespace = ?", (namespace,)
                ).fetchone()[0]
            )
