"""Server benchmarks: push, pull, clone throughput and empty-pull latency over real HTTP.

Runs ``datafn serve`` in a subprocess (SQLite file, then PostgreSQL when reachable) and drives
it from this process with one keep-alive connection::

    python bench/bench_server.py [--records 50000]

PostgreSQL: the server of ``DATAFN_BENCH_POSTGRES_URL`` (see
bench/bench_support.py); a fresh database is created and dropped.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from bench_scale import Driver, bench_clone, bench_empty_pull, bench_pull
from bench_support import postgres_database

from datafn.testing.process import ServerProcess

SCHEMA = {
    "resources": [
        {
            "name": "todos",
            "fields": [
                {"name": "title", "type": "string", "required": True},
                {"name": "done", "type": "boolean", "default": False},
                {"name": "rank", "type": "number"},
            ],
        }
    ]
}


@contextmanager
def server(database: str, workdir: Path) -> Iterator[str]:
    schema = workdir / "schema.json"
    schema.write_bytes(orjson.dumps(SCHEMA))
    (workdir / "pyproject.toml").write_text('[tool.datafn]\nplugins = ["sqlmodel-server"]\n')
    with ServerProcess(schema, database=database, cwd=workdir) as proc:
        yield proc.remote


def bench_push(driver: Driver, batch: int, total: int, prefix: str) -> float:
    batches = max(1, total // batch)
    start = time.perf_counter()
    for b in range(batches):
        mutations = [
            {
                "resource": "todos",
                "operation": "insert",
                "id": f"{prefix}-{b:05d}-{i:04d}",
                "record": {"title": f"todo {b} {i}", "rank": i},
                "clientId": "bench",
                "mutationId": f"{prefix}-{b}-{i}",
            }
            for i in range(batch)
        ]
        result = driver.post("push", orjson.dumps({"clientId": "bench", "mutations": mutations}))
        assert result["ok"], result["errors"][:1]
    return batches * batch / (time.perf_counter() - start)


def run_backend(name: str, database: str, workdir: Path, records: int) -> dict[str, Any]:
    with server(database, workdir) as base:
        driver = Driver(base)
        driver.post("pull", orjson.dumps({"clientId": "warm", "cursors": {"todos": "0"}}))
        row: dict[str, Any] = {"backend": name}
        row["push100"] = bench_push(driver, 100, records // 2, "a")
        row["push500"] = bench_push(driver, 500, records // 2, "b")
        row["clone"], row["cloned"] = bench_clone(driver)
        row["pull"], row["pulled"] = bench_pull(driver)
        row["p50"], row["p99"] = bench_empty_pull(driver)
        driver.http.close()
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=50_000, help="records pushed per backend")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_dir = Path(tmp) / "sqlite"
        sqlite_dir.mkdir()
        rows.append(
            run_backend("sqlite", f"sqlite:///{sqlite_dir / 'bench.db'}", sqlite_dir, args.records)
        )
        with postgres_database() as url:
            if url is not None:
                pg_dir = Path(tmp) / "pg"
                pg_dir.mkdir()
                rows.append(run_backend("postgresql", url, pg_dir, args.records))
    print()
    print("datafn server over HTTP (one client connection; figures, not assertions)")
    header = (
        f"{'backend':<11} {'push b=100':>12} {'push b=500':>12} {'clone':>12} {'pull':>12} "
        f"{'empty pull p50':>15} {'p99':>8}"
    )
    print(header)
    units = ("mut/s", "mut/s", "records/s", "records/s")
    print(f"{'':<11} " + " ".join(f"{u:>12}" for u in units) + f" {'ms':>15} {'ms':>8}")
    for row in rows:
        print(
            f"{row['backend']:<11} {row['push100']:>12,.0f} {row['push500']:>12,.0f} "
            f"{row['clone']:>12,.0f} {row['pull']:>12,.0f} {row['p50']:>15.2f} {row['p99']:>8.2f}"
        )
    print()
    print(
        "targets on a 2-core machine: push at b=500 ≥ 30,000 mut/s on SQLite and ≥ 10,000 on "
        "PostgreSQL, clone ≥ 100,000 records/s, empty pull p50 ≤ 2 ms (flatness as the data "
        "grows: bench/bench_scale.py)"
    )


if __name__ == "__main__":
    main()
