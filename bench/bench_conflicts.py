"""Conflict detection on the push path: what a ``baseSeq`` costs a push, on each store.

Pushes batches of merges of existing records straight into the server store (no HTTP, so the
store's share is what is measured), in three ways:

- ``no base``: mutations without ``baseSeq`` (the original TypeScript client): no detection;
- ``base, fast``: every mutation's ``baseSeq`` is at or above its record's seq (the writer had
  seen everything): the records' seqs are read with the records, nothing more;
- ``base, conflict``: another client changed every record after the writer's base: each record's
  change-log rows after the base are read (one indexed read per record) and the conflict is
  reported (last writer wins).

::

    python bench/bench_conflicts.py [--records 20000] [--batch 100]

PostgreSQL: the server of ``DATAFN_BENCH_POSTGRES_URL`` (see
bench/bench_support.py); a fresh database is created and dropped.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench_support import postgres_database

from datafn.schema import load_schema
from datafn.server.memory import MemoryServerStore
from datafn.server.store import PendingMutation, ServerStore

SCHEMA = load_schema(
    {
        "resources": [
            {
                "name": "todos",
                "fields": [
                    {"name": "title", "type": "string"},
                    {"name": "rank", "type": "number"},
                ],
            }
        ]
    }
)


def merges(
    ids: list[str], tag: str, base: int | None, field: str = "title"
) -> list[PendingMutation]:
    return [
        PendingMutation(
            f"{tag}-{record_id}",
            "todos",
            "merge",
            record_id,
            {"id": record_id, field: f"{tag} {record_id}"},
            base_seq=base,
        )
        for record_id in ids
    ]


async def run(store: ServerStore, records: int, batch: int) -> dict[str, float]:
    ids = [f"t{n:07d}" for n in range(records)]
    chunks = [ids[i : i + batch] for i in range(0, records, batch)]
    async with store:
        for chunk in chunks:  # the records, created by another client
            await store.apply_push(
                "ns",
                "other",
                [
                    PendingMutation(f"i-{r}", "todos", "insert", r, {"id": r, "title": r})
                    for r in chunk
                ],
            )
        out: dict[str, float] = {}
        for name, tag in (("no base", "a"), ("base, fast", "b")):
            seq = await store.namespace_seq("ns")
            start = time.perf_counter()
            for chunk in chunks:
                # "fast": the writer had seen everything up to the seq before this run
                base = None if name == "no base" else seq + records
                await store.apply_push("ns", "me", merges(chunk, tag, base))
            out[name] = records / (time.perf_counter() - start)
        seen = await store.namespace_seq("ns")
        for chunk in chunks:  # another client changes every title after `seen`
            await store.apply_push("ns", "other", merges(chunk, "c", None))
        start = time.perf_counter()
        reported = 0
        for chunk in chunks:
            outcome = await store.apply_push("ns", "me", merges(chunk, "d", seen))
            reported += len(outcome.conflicts)
        out["base, conflict"] = records / (time.perf_counter() - start)
        assert reported == records, reported
    return out


def main() -> None:
    from datafn_sqlmodel.server_store import SqlServerStore

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="records merged per run")
    parser.add_argument("--batch", type=int, default=100, help="mutations per push")
    args = parser.parse_args()
    rows: list[tuple[str, dict[str, float]]] = []
    rows.append(
        ("memory", asyncio.run(run(MemoryServerStore(schema=SCHEMA), args.records, args.batch)))
    )
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        rows.append(
            ("sqlite", asyncio.run(run(SqlServerStore(url, SCHEMA), args.records, args.batch)))
        )
    with postgres_database() as pg:
        if pg is not None:
            rows.append(
                (
                    "postgresql",
                    asyncio.run(run(SqlServerStore(pg, SCHEMA), args.records, args.batch)),
                )
            )
    print()
    print(
        f"merges pushed into the store, batches of {args.batch} (mutations/s; figures, "
        "not assertions)"
    )
    print(f"{'store':<11} {'no base':>12} {'base, fast':>12} {'base, conflict':>15}")
    for name, row in rows:
        print(
            f"{name:<11} {row['no base']:>12,.0f} {row['base, fast']:>12,.0f} "
            f"{row['base, conflict']:>15,.0f}"
        )


if __name__ == "__main__":
    main()
