"""Fixtures shared by the kernel's and the contrib distributions' test suites.

Services: PostgreSQL tests use ``DATAFN_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``). Under ``CI=true`` a service that cannot
be reached fails the test; elsewhere the test is skipped with a message saying how to enable it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES_URL = os.environ.get(
    "DATAFN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _service_missing(what: str, how: str, exc: BaseException) -> None:
    message = f"{what} is not reachable ({type(exc).__name__}: {exc}); {how}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI requires {message}", pytrace=False)
    pytest.skip(message)


def _psycopg_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The URL of the PostgreSQL service; skips (fails in CI) when it is not reachable."""
    try:
        import psycopg

        with psycopg.connect(_psycopg_dsn(POSTGRES_URL), connect_timeout=3) as conn:
            conn.execute("select 1")
    except Exception as exc:
        _service_missing(
            "PostgreSQL",
            "start it or set DATAFN_TEST_POSTGRES_URL to enable these tests",
            exc,
        )
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"datafn_test_{uuid.uuid4().hex[:12]}"
    admin = _psycopg_dsn(postgres_admin_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = postgres_admin_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """The ```python and ```toml blocks of README.md and docs/**/*.md run as tests
    (tests/docs/examples.py; imported only for those files)."""
    if file_path.suffix != ".md":
        return None
    from tests.docs.examples import pytest_collect_file as collect_documentation

    return collect_documentation(file_path, parent)  # type: ignore[no-any-return]
