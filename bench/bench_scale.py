"""Server benchmark at scale: is every hot path flat as the data grows? SQLite and PostgreSQL.

One run starts ``datafn serve`` in a child process on each backend (an SQLite file, then a
fresh PostgreSQL database when one is reachable) and drives it over HTTP with one keep-alive
connection::

    python bench/bench_scale.py [--rows 1000000] [--batch 500]

For each backend it measures, in this order:

* push: ``--rows`` inserts in batches of ``--batch``, each with its own mutation id (so the
  records, the change log and the idempotency records all grow to ``--rows`` rows); mutations/s
  of each tenth of the load (the flatness table: the last tenth should be as fast as the first);
* clone served: records/s of a bare HTTP loop paging through every record (1 000 a page);
* pull served: records/s of pulling the whole change log from cursor 0 (1 000 a pull);
* empty pull: p50/p99 latency of a pull with nothing new;
* client clone end to end: records/s of ``client.sync.clone()`` of a Python client (in a child
  process of its own) into a fresh SQLite store, requests, JSON and local writes included.

PostgreSQL: the server of ``DATAFN_BENCH_POSTGRES_URL`` (see
bench/bench_support.py); the benchmark creates a database of its
own there and drops it at the end. ``--skip-postgres`` / ``--skip-sqlite`` run one backend.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench_support import postgres_database

SCHEMA: dict[str, Any] = {
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
#: the server runs the built-in plugins and the SQL stores only: policy and observer plugins
#: installed in a development environment would otherwise run on every request
SERVER_ENV = {"DATAFN_PLUGINS": "sqlmodel-server"}
PAGE = 1000


class Driver:
    """One keep-alive HTTP connection to the server, posting pre-encoded bodies."""

    def __init__(self, base: str) -> None:
        import httpx

        self.http = httpx.Client(base_url=base, timeout=120)

    def post(self, route: str, body: bytes) -> Any:
        import orjson

        response = self.http.post(
            f"/{route}", content=body, headers={"content-type": "application/json"}
        )
        envelope = orjson.loads(response.content)
        if not envelope["ok"]:
            raise RuntimeError(envelope["error"])
        return envelope["result"]


def push_body(batch_number: int, batch: int) -> bytes:
    import orjson

    mutations = [
        {
            "resource": "todos",
            "operation": "insert",
            "id": f"t{batch_number:06d}-{i:04d}",
            "record": {"title": f"todo {batch_number} {i}", "rank": i},
            "clientId": "bench",
            "mutationId": f"m{batch_number:06d}-{i:04d}",
        }
        for i in range(batch)
    ]
    return orjson.dumps({"clientId": "bench", "mutations": mutations})


def bench_push(driver: Driver, rows: int, batch: int) -> list[float]:
    """Mutations/s of each tenth of the load (bodies are built outside the timed part)."""
    batches = max(1, rows // batch)
    tenth = max(1, batches // 10)
    rates: list[float] = []
    elapsed = 0.0
    done = 0
    for number in range(batches):
        body = push_body(number, batch)
        started = time.perf_counter()
        result = driver.post("push", body)
        elapsed += time.perf_counter() - started
        if not result["ok"]:
            raise RuntimeError(result["errors"][:1])
        done += 1
        if done == tenth or number == batches - 1:
            rates.append(done * batch / elapsed)
            elapsed, done = 0.0, 0
    return rates[:10]


def bench_clone(driver: Driver) -> tuple[float, int]:
    import orjson

    after = None
    served = 0
    started = time.perf_counter()
    while True:
        page = driver.post(
            "clone",
            orjson.dumps(
                {"clientId": "bench", "page": {"table": "todos", "afterId": after, "limit": PAGE}}
            ),
        )
        served += len(page["data"]["todos"])
        after = page["next"]["todos"]
        if after is None:
            return served / (time.perf_counter() - started), served


def bench_pull(driver: Driver) -> tuple[float, int]:
    import orjson

    cursors = {"todos": "0"}
    served = 0
    started = time.perf_counter()
    while True:
        result = driver.post(
            "pull", orjson.dumps({"clientId": "bench", "cursors": cursors, "limit": PAGE})
        )
        served += len(result["records"].get("todos", [])) + len(result["merged"].get("todos", []))
        cursors = result["cursors"]
        if not result["hasMore"]:
            return served / (time.perf_counter() - started), served


def bench_empty_pull(driver: Driver, count: int = 2000) -> tuple[float, float]:
    import orjson

    head = driver.post("pull", orjson.dumps({"clientId": "bench", "cursors": {"todos": "0"}}))
    body = orjson.dumps({"clientId": "bench", "cursors": {"todos": str(10**12)}})
    del head
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        driver.post("pull", body)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), statistics.quantiles(timings, n=100)[98]


# --------------------------------------------------------------------------- client clone


async def child_clone(remote: str, store: str) -> dict[str, Any]:
    from datafn import Client

    async with Client(schema=SCHEMA, remote=remote, store=store) as client:
        started = time.perf_counter()
        await client.sync.clone()
        seconds = time.perf_counter() - started
        count = await client.table("todos").count()
    return {"records": count, "seconds": seconds}


def client_clone(remote: str, folder: Path) -> float:
    """Records/s of a Python client cloning everything, in a child process of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFN_")}
    env["DATAFN_PLUGINS"] = "sqlmodel-client"
    store = f"sqlite:///{folder / f'client-{uuid.uuid4().hex[:8]}.db'}"
    out = subprocess.run(
        [sys.executable, __file__, "--child", remote, store],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["records"]) / float(result["seconds"])


# --------------------------------------------------------------------------- driver


def run_backend(name: str, database: str, folder: Path, rows: int, batch: int) -> dict[str, Any]:
    import orjson

    from datafn.testing.process import ServerProcess

    schema = folder / "schema.json"
    schema.write_bytes(orjson.dumps(SCHEMA))
    with ServerProcess(schema, database=database, cwd=folder, env=SERVER_ENV) as server:
        driver = Driver(server.remote)
        driver.post("pull", orjson.dumps({"clientId": "warm", "cursors": {"todos": "0"}}))
        row: dict[str, Any] = {"backend": name}
        print(f"{name}: pushing {rows:,} mutations in batches of {batch}", flush=True)
        row["push"] = bench_push(driver, rows, batch)
        print(f"{name}: push per tenth " + " ".join(f"{r:,.0f}" for r in row["push"]), flush=True)
        row["clone"], row["cloned"] = bench_clone(driver)
        row["pull"], row["pulled"] = bench_pull(driver)
        row["p50"], row["p99"] = bench_empty_pull(driver)
        driver.http.close()
        row["client_clone"] = client_clone(server.remote, folder)
        print(f"{name}: done", flush=True)
        return row


def report(rows: list[dict[str, Any]], total: int, batch: int) -> None:
    print()
    print(
        f"push of {total:,} inserts, batches of {batch}, each with a mutation id "
        "(mutations/s per tenth of the load)"
    )
    print(f"{'tenth':<8}" + "".join(f"{row['backend']:>14}" for row in rows))
    for tenth in range(10):
        cells = [row["push"][tenth] if tenth < len(row["push"]) else float("nan") for row in rows]
        print(f"{tenth + 1:<8}" + "".join(f"{cell:>14,.0f}" for cell in cells))
    print(
        f"{'last/1st':<8}" + "".join(f"{row['push'][-1] / row['push'][0]:>14.2f}" for row in rows)
    )
    print(f"{'overall':<8}" + "".join(f"{statistics.fmean(row['push']):>14,.0f}" for row in rows))
    print()
    print(f"after the load ({total:,} records, {total:,} changes)")
    lines = [
        ("clone served (records/s)", "clone", ",.0f"),
        ("pull served (records/s)", "pull", ",.0f"),
        ("empty pull p50 (ms)", "p50", ".2f"),
        ("empty pull p99 (ms)", "p99", ".2f"),
        ("client clone end to end (records/s)", "client_clone", ",.0f"),
    ]
    print(f"{'':<38}" + "".join(f"{row['backend']:>14}" for row in rows))
    for label, key, fmt in lines:
        print(f"{label:<38}" + "".join(f"{format(row[key], fmt):>14}" for row in rows))
    print()
    print(
        "targets on a 2-core machine: push >= 30,000 mut/s on SQLite and >= 10,000 on "
        "PostgreSQL, last tenth within 20 % of the first; clone served >= 100,000 records/s; "
        "empty pull p50 <= 2 ms; client clone >= 150,000 records/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="mutations pushed per backend")
    parser.add_argument("--batch", type=int, default=500, help="mutations per push")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import anyio

        print(json.dumps(anyio.run(child_clone, *args.child)))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="datafn-bench-") as tmp:
        if not args.skip_sqlite:
            folder = Path(tmp) / "sqlite"
            folder.mkdir()
            database = f"sqlite:///{folder / 'server.db'}"
            results.append(run_backend("sqlite", database, folder, args.rows, args.batch))
        if not args.skip_postgres:
            with postgres_database() as url:
                if url is not None:
                    folder = Path(tmp) / "postgresql"
                    folder.mkdir()
                    results.append(run_backend("postgresql", url, folder, args.rows, args.batch))
    if results:
        report(results, args.rows, args.batch)


if __name__ == "__main__":
    main()
