"""What the benchmarks share: a fresh PostgreSQL database per run (not a benchmark itself).

The URL is ``DATAFN_BENCH_POSTGRES_URL``, else ``DATAFN_TEST_POSTGRES_URL``, else
``postgresql+psycopg://postgres@127.0.0.1:5432/test``; a database named ``datafn_bench_…`` is
created next to it and dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

POSTGRES_URL = os.environ.get(
    "DATAFN_BENCH_POSTGRES_URL",
    os.environ.get("DATAFN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
)


@contextmanager
def postgres_database(*, required: bool = False) -> Iterator[str | None]:
    """The URL of a new, empty database; ``None`` (with a line saying why) when PostgreSQL
    cannot be reached, unless ``required``."""
    import psycopg

    admin = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://", 1)
    name = f"datafn_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(admin, connect_timeout=3, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        if required:
            raise
        print(f"PostgreSQL skipped: not reachable ({type(exc).__name__}: {exc})")
        yield None
        return
    try:
        yield POSTGRES_URL.rpartition("/")[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
