"""Client benchmark: clone throughput and memory, push throughput, local write latency.

Run: ``python bench/bench_client.py`` (defaults: clones of 100 000 and 1 000 000 records,
push of 10 000 offline writes); ``--clone 20000 --push 2000`` for a quick run. It starts
``datafn serve`` on SQLite in a child process, seeds it through the protocol, and measures each
client run in a fresh child process of its own, so that peak RSS is the client's alone:

* clone: records/s end to end (requests, JSON, SQLite writes) into a fresh SQLite client,
  ``--repeat`` times per size (the median is printed too: figures on a shared machine vary);
  peak RSS of the client process; for comparison, the records/s of a bare HTTP loop fetching
  the same pages (the server's own bound: each page needs the previous page's last id);
* local writes: latency of ``table.insert`` (validation, SQLite transaction with the changelog
  entry, event) as p50/p99;
* push: mutations/s of pushing those offline writes.

The client processes load the built-in plugins and ``sqlmodel-client`` only
(``DATAFN_PLUGINS=sqlmodel-client``), the server the built-ins and ``sqlmodel-server``: policy
and observer plugins installed in a development environment (audit, guard, the examples) would
otherwise run on every request.

Figures only; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

#: the server runs the built-in plugins and the SQL stores only (see the module docstring)
SERVER_ENV = {"DATAFN_PLUGINS": "sqlmodel-server"}

SCHEMA: dict[str, Any] = {
    "resources": [
        {
            "name": "items",
            "fields": [
                {"name": "title", "type": "string", "required": True},
                {"name": "n", "type": "number"},
                {"name": "done", "type": "boolean", "default": False},
            ],
        }
    ]
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --------------------------------------------------------------------------- child processes


async def child_clone(remote: str, store: str) -> dict[str, Any]:
    from datafn import Client

    async with Client(schema=SCHEMA, remote=remote, store=store) as client:
        started = time.perf_counter()
        report = await client.sync.clone()
        seconds = time.perf_counter() - started
        count = await client.table("items").count()
    return {"records": count, "seconds": seconds, "pages": report.pages, "rss": peak_rss_mb()}


async def child_push(remote: str, store: str, writes: int) -> dict[str, Any]:
    from datafn import Client

    async with Client(schema=SCHEMA, remote=remote, store=store, push_batch_size=500) as client:
        await client.sync.clone()
        items = client.table("items")
        latencies = []
        for i in range(writes):
            started = time.perf_counter()
            await items.insert({"id": f"w{i:07}", "title": "offline write", "n": i})
            latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        report = await client.sync.push()
        seconds = time.perf_counter() - started
    return {
        "writes": writes,
        "insert_p50_ms": percentile(latencies, 50) * 1000,
        "insert_p99_ms": percentile(latencies, 99) * 1000,
        "applied": report.applied,
        "seconds": seconds,
        "rss": peak_rss_mb(),
    }


def run_child(*args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFN_")}
    env["DATAFN_PLUGINS"] = "sqlmodel-client"
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- driver


def seed(remote: str, start: int, stop: int) -> None:
    with httpx.Client(base_url=remote + "/", timeout=120) as http:
        for first in range(start, stop, 5000):
            rows = [
                {"id": f"r{i:08}", "title": f"record number {i}", "n": i}
                for i in range(first, min(first + 5000, stop))
            ]
            body = http.post("seed", json={"data": {"items": rows}}).json()
            if not body.get("ok"):
                raise SystemExit(f"seeding failed: {body}")


def server_pages_alone(remote: str, table: str = "items") -> float:
    """Records/s of fetching every clone page with a bare HTTP loop: the server's own bound."""
    import orjson

    count, after = 0, None
    started = time.perf_counter()
    with httpx.Client(timeout=120) as http:
        while True:
            payload = {"clientId": "bench", "page": {"table": table, "afterId": after}}
            body = orjson.loads(http.post(f"{remote}/clone", content=orjson.dumps(payload)).content)
            count += len(body["result"]["data"][table])
            after = body["result"]["next"][table]
            if after is None:
                return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clone", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--push", type=int, default=10_000)
    parser.add_argument(
        "--repeat", type=int, default=3, help="clones per size (into fresh files); median shown"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, remote, store, *rest = args.child
        if mode == "clone":
            result = anyio.run(child_clone, remote, store)
        else:
            result = anyio.run(child_push, remote, store, int(rest[0]))
        print(json.dumps(result))
        return

    from datafn.testing.process import ServerProcess

    with tempfile.TemporaryDirectory(prefix="datafn-bench-") as tmp:
        folder = Path(tmp)
        schema = folder / "schema.json"
        schema.write_text(json.dumps(SCHEMA))
        with ServerProcess(
            schema, database=f"sqlite:///{folder / 'server.db'}", cwd=folder, env=SERVER_ENV
        ) as server:
            print(f"server: {server.remote} (SQLite)")
            seeded = 0
            for size in sorted(args.clone):
                started = time.perf_counter()
                seed(server.remote, seeded, size)
                seeded = size
                print(f"seeded {size:,} records ({time.perf_counter() - started:.1f} s)")
                bound = server_pages_alone(server.remote)
                print(f"server alone (bare HTTP page loop, no client work): {bound:,.0f} records/s")
                rates = []
                for run in range(args.repeat):
                    store = f"sqlite:///{folder / f'clone-{size}-{run}.db'}"
                    result = run_child("clone", server.remote, store)
                    rates.append(result["records"] / result["seconds"])
                    print(
                        f"clone {result['records']:>9,} records: {result['seconds']:7.2f} s  "
                        f"{rates[-1]:>9,.0f} records/s  "
                        f"peak RSS {result['rss']:6.1f} MB  ({result['pages']} pages)"
                    )
                if len(rates) > 1:
                    median = statistics.median(rates)
                    print(f"clone {size:>9,} records: median {median:,.0f} records/s")
        # push into an empty server, so the clone before the writes is trivial
        (folder / "push").mkdir()
        with ServerProcess(
            schema,
            database=f"sqlite:///{folder / 'push' / 'server.db'}",
            cwd=folder / "push",
            env=SERVER_ENV,
        ) as server:
            store = f"sqlite:///{folder / 'push' / 'client.db'}"
            result = run_child("push", server.remote, store, str(args.push))
            print(
                f"local insert latency: p50 {result['insert_p50_ms']:.3f} ms  "
                f"p99 {result['insert_p99_ms']:.3f} ms  ({result['writes']:,} inserts)"
            )
            print(
                f"push {result['applied']:,} offline writes: {result['seconds']:.2f} s  "
                f"{result['applied'] / result['seconds']:,.0f} mutations/s"
            )


if __name__ == "__main__":
    main()
