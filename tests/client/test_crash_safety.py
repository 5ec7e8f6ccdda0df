"""Crash safety: a client process SIGKILLed at random points during push and during clone.

After every kill the client is restarted; at the end no mutation may be lost or applied twice
and the client's local state must equal the server's.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
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


class Worker:
    """A crash worker process; its lines are read with a deadline, so a stuck worker fails the
    test instead of hanging it (its stderr goes to a file, which never fills a pipe)."""

    def __init__(self, mode: str, remote: str, store: str, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFN_")}
        self.log = log
        with log.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(WORKER), mode, remote, store],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                self.lines.put(line)
        self.lines.put(None)

    def wait(self) -> int:
        """Wait for the process and its reader (which closes the pipe); the exit code."""
        code = self.process.wait(timeout=60)
        self.reader.join(timeout=60)
        return code

    def message(self, timeout: float = 60) -> dict[str, Any] | None:
        """The next JSON line, or None when the worker has ended."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.process.kill()
            raise AssertionError(f"the worker said nothing for {timeout} s") from None
        return None if line is None else json.loads(line)  # type: ignore[no-any-return]

    def ready(self) -> dict[str, Any]:
        message = self.message()
        if message is None:
            raise AssertionError(f"the worker died before it was ready: {self.log.read_text()}")
        return message

    def until(self, **expected: Any) -> None:
        """Read until a message with ``expected`` (the worker ending first fails)."""
        while (message := self.message()) is not None:
            if all(message.get(k) == v for k, v in expected.items()):
                return
        raise AssertionError(f"the worker ended before {expected}: {self.log.read_text()}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.wait()


def run_to_end(mode: str, remote: str, store: str, tmp: Path) -> None:
    worker = Worker(mode, remote, store, tmp / f"{mode}.log")
    worker.ready()
    worker.until(done=mode)
    assert worker.wait() == 0, worker.log.read_text()


def kill_at_random(
    mode: str, remote: str, store: str, rng: random.Random, most: float, tmp: Path
) -> dict[str, Any]:
    worker = Worker(mode, remote, store, tmp / f"{mode}.log")
    info = worker.ready()
    time.sleep(rng.uniform(0, most))
    worker.kill()
    return info


SEEDED = 20_000
PAGE = 1_000  # sync.clone-page-size


def clone_until_killed(
    remote: str, store: str, rng: random.Random, tmp: Path
) -> tuple[dict[str, Any], bool]:
    """Start a clone and SIGKILL it once a random number of its pages have arrived, at least
    two pages before its end. A fresh clone is killed only after a page is surely written: the
    fetcher runs at most BUFFER_PAGES ahead of the writer, which takes what has arrived in one
    transaction, so when page BUFFER_PAGES + 3 arrives two batches were taken and the first is
    committed. A resumed clone has its pages already and may be killed at any page. A clone
    with too few pages left runs to its end. Returns the worker's ready line and whether it was
    killed."""
    worker = Worker("clone", remote, store, tmp / "clone.log")
    info = worker.ready()
    after = info["after_id"] if info["hydration"] == "hydrating" else None
    left = SEEDED - int(after[1:]) - 1 if after and after.startswith("s") else SEEDED
    first = 1 if after else crash_worker.BUFFER_PAGES + 3
    if left // PAGE - 2 < first:
        worker.until(done="clone")
        assert worker.wait() == 0, worker.log.read_text()
        return info, False
    worker.until(page=rng.randint(first, left // PAGE - 2))
    worker.kill()
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
        run_to_end("setup", server.remote, store, tmp_path)
        total = crash_worker.RECORDS + crash_worker.MERGES
        assert pending(db_path) == total
        for _ in range(ITERATIONS):
            kill_at_random("push", server.remote, store, rng, most=0.5, tmp=tmp_path)
        assert server.change_count() > 0 or pending(db_path) == total
        run_to_end("push", server.remote, store, tmp_path)

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
                info, was_killed = clone_until_killed(server.remote, store, rng, tmp_path)
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
        run_to_end("finish", server.remote, store, tmp_path)
        assert local_records(db_path, "items") == server.records("items")
