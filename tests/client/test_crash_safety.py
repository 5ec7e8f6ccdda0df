"""Crash safety: a client process SIGKILLed at random points during push and during clone.

After every kill the client is restarted; at the end no mutation may be lost or applied twice
and the client's local state must equal the server's.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.client import crash_worker
from tests.client.server_process import ServerProcess

pytestmark = pytest.mark.slow

ITERATIONS = 15
WORKER = Path(crash_worker.__file__)


def start_worker(mode: str, remote: str, store: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFN_")}
    return subprocess.Popen(
        [sys.executable, str(WORKER), mode, remote, store],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def ready(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise AssertionError(f"the worker died before it was ready: {process.stderr.read()}")  # type: ignore[union-attr]
    return json.loads(line)  # type: ignore[no-any-return]


def run_to_end(mode: str, remote: str, store: str) -> None:
    process = start_worker(mode, remote, store)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert '"done"' in out


def kill_at_random(
    mode: str, remote: str, store: str, rng: random.Random, most: float
) -> dict[str, Any]:
    process = start_worker(mode, remote, store)
    info = ready(process)
    time.sleep(rng.uniform(0, most))
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    return info


SEEDED = 20_000
PAGE = 1_000  # sync.clone-page-size


def clone_until_killed(
    remote: str, store: str, rng: random.Random
) -> tuple[dict[str, Any], bool]:
    """Start a clone and SIGKILL it once a random number of its pages have arrived: enough that
    a page is written (the fetcher runs at most ``clone-buffer-pages`` ahead of the writer),
    at least two pages before its end. A clone with too few pages left runs to its end.
    Returns the worker's ready line and whether it was killed."""
    process = start_worker("clone", remote, store)
    info = ready(process)
    after = info["after_id"] if info["hydration"] == "hydrating" else None
    left = SEEDED - int(after[1:]) - 1 if after and after.startswith("s") else SEEDED
    first = 1 if after else 7
    if left // PAGE - 2 < first:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0 and '"done"' in out, err
        return info, False
    target = rng.randint(first, left // PAGE - 2)
    assert process.stdout is not None
    for line in process.stdout:
        if json.loads(line).get("page") == target:
            break
    else:
        raise AssertionError(f"the clone ended before page {target}: {process.stderr.read()}")  # type: ignore[union-attr]
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    return info, True


def local_records(db_path: Path, resource: str) -> dict[str, Any]:
    with sqlite3.connect(db_path) as db:
        rows = db.execute(f'SELECT id, _datafn_record FROM "{resource}"').fetchall()
    return {row[0]: json.loads(row[1]) for row in rows}


def pending(db_path: Path) -> int:
    with sqlite3.connect(db_path) as db:
        return int(db.execute("SELECT count(*) FROM _datafn_changelog").fetchone()[0])


def test_push_killed_at_random_points_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(1234)
    db_path = tmp_path / "client.db"
    store = f"sqlite:///{db_path}"
    with ServerProcess(tmp_path / "server", crash_worker.SCHEMA) as server:
        run_to_end("setup", server.remote, store)
        total = crash_worker.RECORDS + crash_worker.MERGES
        assert pending(db_path) == total
        for _ in range(ITERATIONS):
            kill_at_random("push", server.remote, store, rng, most=0.5)
        assert server.change_count() > 0 or pending(db_path) == total
        run_to_end("push", server.remote, store)

        expected = {
            f"r{i:02}": {"id": f"r{i:02}", "n": i, "title": "v-"}
            for i in range(crash_worker.RECORDS)
        }
        for j in range(crash_worker.MERGES):
            expected[f"r{j % crash_worker.RECORDS:02}"]["title"] = f"v{j}"
        assert server.records("items") == expected
        assert server.change_count() == total  # every mutation applied exactly once
        assert pending(db_path) == 0
        assert local_records(db_path, "items") == expected


def test_clone_killed_at_random_points_resumes_and_misses_nothing(tmp_path: Path) -> None:
    rng = random.Random(4321)
    db_path = tmp_path / "client.db"
    store = f"sqlite:///{db_path}"
    with ServerProcess(tmp_path / "server", crash_worker.SCHEMA) as server:
        with httpx.Client(base_url=server.remote + "/") as http:
            for start in range(0, SEEDED, 2_000):
                rows = [
                    {"id": f"s{i:05}", "title": "seed", "n": i} for i in range(start, start + 2_000)
                ]
                assert http.post("seed", json={"data": {"items": rows}}).json()["ok"]
            kills = 0
            killed = False
            for it in range(ITERATIONS):
                info, was_killed = clone_until_killed(server.remote, store, rng)
                if killed:  # the clone the kill interrupted resumes after its last page
                    assert info["hydration"] == "hydrating" and info["after_id"] is not None
                killed = was_killed
                kills += killed
                # another writer changes data while the clone is under way
                mutations = [
                    {
                        "resource": "items",
                        "operation": "merge",
                        "id": f"s{rng.randrange(SEEDED):05}",
                        "record": {"title": f"changed {it}"},
                    },
                    {
                        "resource": "items",
                        "operation": "delete",
                        "id": f"s{rng.randrange(SEEDED):05}",
                    },
                    {
                        "resource": "items",
                        "operation": "insert",
                        "id": f"new{it:02}",
                        "record": {"title": "new", "n": it},
                    },
                ]
                for k, m in enumerate(mutations):
                    m.update(clientId="other", mutationId=f"other-{it}-{k}", version=1)
                body = http.post("push", json={"clientId": "other", "mutations": mutations}).json()
                assert body["ok"] and body["result"]["ok"], body
        assert kills >= ITERATIONS // 2
        run_to_end("finish", server.remote, store)
        assert local_records(db_path, "items") == server.records("items")
