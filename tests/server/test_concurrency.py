"""The visibility rule across processes: several `datafn serve` processes on one database,
concurrent pushers and pullers; no puller ever misses a change, every puller ends with
exactly the server's records."""

from __future__ import annotations

import contextlib
import random
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from datafn.testing.process import ServerProcess

SCHEMA = {
    "resources": [
        {"name": "todos", "fields": [{"name": "title", "type": "string"}]},
        {
            "name": "notes",
            "fields": [{"name": "body", "type": "string"}, {"name": "n", "type": "number"}],
        },
    ]
}
SERVERS = 3
PUSHERS = 6
BATCHES = 15
BATCH = 20
PULLERS = 3


@contextmanager
def servers(tmp_path: Path, database: str, count: int) -> Iterator[list[str]]:
    schema = tmp_path / "schema.json"
    schema.write_bytes(orjson.dumps(SCHEMA))
    # only the built-in plugins and the SQL stores: no third-party policy interferes
    (tmp_path / "pyproject.toml").write_text('[tool.datafn]\nplugins = ["sqlmodel-server"]\n')
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(ServerProcess(schema, database=database, cwd=tmp_path))
            for _ in range(count)
        ]
        yield [proc.remote for proc in procs]


def _ok(response: httpx.Response) -> Any:
    envelope = response.json()
    assert response.status_code == 200, envelope
    return envelope["result"]


class Puller:
    """A client replica that pulls from random servers and records every answer."""

    def __init__(self, name: str, bases: list[str]) -> None:
        self.rng = random.Random(name)
        self.bases = bases
        self.http = httpx.Client(timeout=30)
        self.cursors = {"todos": "0", "notes": "0"}
        self.replica: dict[str, dict[str, dict[str, Any]]] = {"todos": {}, "notes": {}}
        #: (cursor before, cursor after, ids returned) of every todos answer
        self.windows: list[tuple[int, int, set[str]]] = []
        self.problems: list[str] = []

    def pull_once(self) -> bool:
        base = self.rng.choice(self.bases)
        body = {"clientId": "puller", "cursors": self.cursors, "limit": 37}
        result = _ok(self.http.post(f"{base}/pull", json=body))
        for resource, value in result["cursors"].items():
            if int(value) < int(self.cursors[resource]):
                self.problems.append(
                    f"{resource} cursor went back: {self.cursors[resource]} -> {value}"
                )
        ids: set[str] = set()
        for resource in ("todos", "notes"):
            table = self.replica[resource]
            for record in result["records"].get(resource, []):
                table[record["id"]] = record
                ids.add(record["id"]) if resource == "todos" else None
            for delta in result["merged"].get(resource, []):
                table.setdefault(delta["id"], {}).update(delta)
            for record_id in result["deleted"].get(resource, []):
                table.pop(record_id, None)
        before, after = int(self.cursors["todos"]), int(result["cursors"]["todos"])
        if after > before or ids:
            self.windows.append((before, after, ids))
        self.cursors = result["cursors"]
        return bool(result["hasMore"])

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.pull_once()
            while self.pull_once():
                pass
            self.pull_once()
        finally:
            self.http.close()


def pusher(index: int, bases: list[str], errors: list[str]) -> None:
    rng = random.Random(index)
    client_id = f"pusher{index}"
    with httpx.Client(timeout=30) as http:
        for b in range(BATCHES):
            mutations = []
            for i in range(BATCH):
                mid = f"{b}-{i}"
                if rng.random() < 0.6:
                    op, resource, rid, record = (
                        "insert",
                        "todos",
                        f"{client_id}-{mid}",
                        {"title": mid},
                    )
                else:
                    resource, rid = "notes", f"note{rng.randrange(12)}"
                    op = rng.choice(["merge", "merge", "replace", "delete"])
                    record = None if op == "delete" else {"body": client_id, "n": b * 100 + i}
                mutation = {
                    "resource": resource,
                    "operation": op,
                    "id": rid,
                    "clientId": client_id,
                    "mutationId": mid,
                }
                if record is not None:
                    mutation["record"] = record
                mutations.append(mutation)
            body = {"clientId": client_id, "mutations": mutations}
            result = _ok(http.post(f"{rng.choice(bases)}/push", json=body))
            if not result["ok"]:
                errors.append(str(result["errors"]))
            if rng.random() < 0.2:  # a retry after a lost answer changes nothing
                replay = _ok(http.post(f"{rng.choice(bases)}/push", json=body))
                if replay["applied"] != result["applied"]:
                    errors.append("a replay answered differently")


def run_scenario(tmp_path: Path, database: str, read_log: Any) -> None:
    with servers(tmp_path, database, SERVERS) as bases:
        pullers = [Puller(f"p{i}", bases) for i in range(PULLERS)]
        stop = threading.Event()
        errors: list[str] = []
        reader_threads = [threading.Thread(target=p.run, args=(stop,)) for p in pullers]
        writer_threads = [
            threading.Thread(target=pusher, args=(i, bases, errors)) for i in range(PUSHERS)
        ]
        for thread in reader_threads + writer_threads:
            thread.start()
        for thread in writer_threads:
            thread.join(120)
        stop.set()
        for thread in reader_threads:
            thread.join(120)
        assert errors == []
        with httpx.Client() as http:
            clone = _ok(
                http.post(
                    f"{bases[0]}/clone", json={"clientId": "check", "tables": ["todos", "notes"]}
                )
            )
            status_seq = _ok(
                http.post(
                    f"{bases[1]}/pull",
                    json={"clientId": "x", "cursors": {"todos": "0", "notes": "0"}, "limit": 1},
                )
            )
        assert status_seq["hasMore"]
        assert len(clone["data"]["todos"]) > PUSHERS * BATCHES * BATCH // 3
        server_state = {r: {rec["id"]: rec for rec in recs} for r, recs in clone["data"].items()}
        changes = read_log()  # seq -> (resource, record id)
        seqs = sorted(changes)
        assert seqs == list(range(1, len(seqs) + 1)), "the change log has gaps"
        todo_ids_by_seq = {seq: rid for seq, (res, rid) in changes.items() if res == "todos"}
        for puller in pullers:
            assert puller.problems == []
            assert puller.replica == server_state
            for before, after, ids in puller.windows:
                expected = {rid for seq, rid in todo_ids_by_seq.items() if before < seq <= after}
                assert ids == expected, (
                    f"window ({before}, {after}] missed {sorted(expected - ids)[:5]}"
                )
            assert int(puller.cursors["todos"]) == max(todo_ids_by_seq)


@pytest.mark.slow
@pytest.mark.postgres
def test_visibility_rule_with_several_server_processes_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    import psycopg

    def read_log() -> dict[int, tuple[str, str]]:
        dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                "SELECT seq, resource, record_id FROM datafn_changes WHERE namespace = 'datafn'"
            ).fetchall()
        return {int(seq): (res, rid) for seq, res, rid in rows}

    run_scenario(tmp_path, postgres_url, read_log)


@pytest.mark.slow
def test_visibility_rule_with_several_server_processes_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"

    def read_log() -> dict[int, tuple[str, str]]:
        with sqlite3.connect(path) as conn:
            rows = conn.execute(
                "SELECT seq, resource, record_id FROM datafn_changes WHERE namespace = 'datafn'"
            ).fetchall()
        conn.close()
        return {int(seq): (res, rid) for seq, res, rid in rows}

    run_scenario(tmp_path, f"sqlite:///{path}", read_log)
