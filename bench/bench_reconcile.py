"""Reconcile benchmark: bytes and time to compare N records by content, against a full clone.

Run: ``python bench/bench_reconcile.py`` (default 1 000 000 records; ``--records 100000`` for
a quick run; ``--client-store sqlite`` for a SQLite client instead of the memory one). The
real server application runs in-process on the memory store, reached through httpx's ASGI
transport, so the figures are the protocol's bytes (request and answer bodies, as sent) and
the CPU time of both sides on one event loop, without a network.

It clones the resource once (the baseline: what a count-based reconcile re-downloads for any
drift), then damages the client's copy behind its back at an equal count — 0, 1 and 1 000
records get another title — and runs ``client.sync.reconcile()`` (the digest form) each time,
printing bytes, time, requests and records fetched, and the bytes as a share of the clone.

Figures only; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

from datafn import Client
from datafn.builtins.client_http import HttpTransport
from datafn.client.store import PullPage
from datafn.runtime import Runtime
from datafn.server import create_app
from datafn.server.memory import MemoryServerStore

REMOTE = "http://datafn.bench/datafn"
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


class CountingTransport(httpx.AsyncBaseTransport):
    """The in-process server, counting the bytes of request and answer bodies."""

    def __init__(self, app: Any) -> None:
        self.asgi = httpx.ASGITransport(app=app)
        self.sent = 0
        self.received = 0
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += len(request.read())
        self.requests += 1
        response = await self.asgi.handle_async_request(request)
        body = await response.aread()
        self.received += len(body)
        return response

    def reset(self) -> None:
        self.sent = self.received = self.requests = 0

    @property
    def total(self) -> int:
        return self.sent + self.received


def _record(i: int) -> dict[str, Any]:
    return {"id": f"item:{i:09d}", "title": f"item number {i}", "n": i, "done": i % 3 == 0}


async def run(records: int, client_store: str, tmp: Path) -> None:
    pyproject = tmp / "pyproject.toml"
    pyproject.write_text('[project]\nname = "bench"\n\n[tool.datafn]\n', encoding="utf-8")
    store = MemoryServerStore()
    app = create_app(Runtime.boot(use_env=False, pyproject=pyproject), schema=SCHEMA, store=store)
    network = CountingTransport(app)
    started = time.perf_counter()
    async with app.router.lifespan_context(app):
        for start in range(0, records, 10_000):
            await store.seed(
                "datafn",
                {"items": [_record(i) for i in range(start, min(records, start + 10_000))]},
            )
        print(f"seeded {records} records in {time.perf_counter() - started:.1f} s")
        url = "memory://" if client_store == "memory" else f"sqlite:///{tmp}/client.db"
        client = Client(
            store=url,
            schema=SCHEMA,
            client_id="bench",
            transport=HttpTransport(REMOTE, transport=network),
            use_env=False,
            pyproject=pyproject,
        )
        async with client:
            network.reset()
            started = time.perf_counter()
            await client.sync.clone()
            clone_time = time.perf_counter() - started
            clone_bytes = network.total
            print(
                f"full clone:       {clone_bytes / 1e6:10.2f} MB  {clone_time:8.2f} s  "
                f"{network.requests:6d} requests"
            )
            rng = random.Random(7)
            for differing in (0, 1, 1000):
                picked = rng.sample(range(records), min(differing, records))
                if picked:
                    damaged = [{**_record(i), "title": "drifted"} for i in picked]
                    await client.store.apply_pull(PullPage(records={"items": damaged}))
                network.reset()
                started = time.perf_counter()
                report = await client.sync.reconcile(["items"])
                elapsed = time.perf_counter() - started
                assert report.method == "digest", report
                assert report.repaired["items"] == len(picked), report
                print(
                    f"reconcile, {differing:4d} differing: {network.total / 1e6:10.3f} MB  "
                    f"{elapsed:8.2f} s  {network.requests:6d} requests  "
                    f"{report.fetched['items']:6d} records fetched  "
                    f"bytes {100 * network.total / clone_bytes:6.3f} % of the clone, "
                    f"time {100 * elapsed / clone_time:6.1f} % of the clone"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--client-store", choices=("memory", "sqlite"), default="memory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(run, args.records, args.client_store, Path(tmp))


if __name__ == "__main__":
    main()
