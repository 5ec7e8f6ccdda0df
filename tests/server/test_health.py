"""``GET <base>/health``: ready or not, without credentials, revealing nothing."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest

from datafn.context import Identity
from datafn.errors import Forbidden
from datafn.plugin import hookimpl
from datafn.schema import load_schema
from datafn.server.memory import MemoryServerStore

from .conftest import SCHEMA, MakeApi, mutation

NOT_READY = {
    "ok": False,
    "error": {"code": "SERVICE_UNAVAILABLE", "message": "not ready", "details": {"path": "$"}},
}


async def health(api: Any) -> httpx.Response:
    return await api.http.get("/datafn/health")  # type: ignore[no-any-return]


async def test_a_ready_server_answers_ok_and_nothing_else(make_api: MakeApi) -> None:
    async with make_api() as api:
        response = await health(api)
        assert response.status_code == 200
        assert response.content == b'{"ok":true}'
        assert response.headers["cache-control"] == "no-store"
        head = await api.http.head("/datafn/health")
        assert head.status_code == 200


class _DenyEveryone:
    @hookimpl
    def datafn_authenticate(self, headers: dict[str, str]) -> Identity | None:
        raise Forbidden("no one gets in")


async def test_it_needs_no_credentials_whatever_the_authentication(make_api: MakeApi) -> None:
    async with make_api(server={"tokens": {"t0ken": "alice"}}) as api:
        await api.error("status", status=401, code="FORBIDDEN")
        assert (await health(api)).status_code == 200
    async with make_api(plugins=(_DenyEveryone(),)) as api:
        await api.error("status", status=403, code="FORBIDDEN")
        assert (await health(api)).status_code == 200


async def test_a_draining_server_is_not_ready(make_api: MakeApi) -> None:
    async with make_api() as api:
        api.server.begin_shutdown()
        response = await health(api)
        assert response.status_code == 503
        assert response.json() == NOT_READY
        assert response.headers["retry-after"] == "1"


async def test_sqlite_a_missing_table_is_not_ready(make_api: MakeApi, tmp_path: Path) -> None:
    path = tmp_path / "health.db"
    async with make_api(store=f"sqlite:///{path}") as api:
        await api.push(mutation("insert", "t1", {"title": "a"}))
        assert (await health(api)).status_code == 200
        with sqlite3.connect(path) as conn:
            conn.execute("DROP TABLE datafn_records_notes")
        response = await health(api)
        assert response.status_code == 503
        assert response.json() == NOT_READY  # not the table, not the path
        with sqlite3.connect(path) as conn:  # created again: ready again
            conn.execute(
                "CREATE TABLE datafn_records_notes (namespace TEXT, id TEXT, data TEXT, seq INT)"
            )
        assert (await health(api)).status_code == 200


async def test_postgresql_a_dropped_database_is_not_ready(
    make_api: MakeApi, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import psycopg

    admin, _, name = postgres_url.replace("+psycopg", "").rpartition("/")
    url = postgres_url.replace("postgres@", "postgres:pw-not-shown@")  # trust: any password
    async with make_api(store=url) as api:
        await api.push(mutation("insert", "t1", {"title": "a"}))
        assert (await health(api)).status_code == 200
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        for _ in range(2):  # and stays so; the reason is logged once
            response = await health(api)
            assert response.status_code == 503
            assert response.json() == NOT_READY
        warnings = [r.getMessage() for r in caplog.records if "health" in r.getMessage()]
        assert len(warnings) == 1 and "not ready" in warnings[0]
        assert "pw-not-shown" not in caplog.text


class _HangingStore(MemoryServerStore):
    """A store whose readiness check blocks in a worker thread (a database that does not
    answer) until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__("memory://", load_schema(SCHEMA))
        self.hang = False
        self.checks = 0
        self.release = threading.Event()
        self.answered = anyio.Event()

    async def check_ready(self) -> None:
        await super().check_ready()
        if self.hang:
            self.checks += 1
            await anyio.to_thread.run_sync(self.release.wait, 10)
            self.answered.set()


async def test_a_store_blocked_in_a_thread_is_not_ready_within_the_deadline(
    make_api: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    store = _HangingStore()
    async with make_api(store=store) as api:
        api.server.health_timeout = 0.2
        try:
            assert (await health(api)).status_code == 200
            store.hang = True
            with anyio.fail_after(5):
                response = await health(api)
            assert response.status_code == 503
            assert response.json() == NOT_READY
            assert not store.release.is_set()  # answered while the check is still blocked
            # a flood of probes shares the check in flight: none queues behind it
            async with anyio.create_task_group() as group:
                answers: list[int] = []

                async def probe() -> None:
                    answers.append((await health(api)).status_code)

                for _ in range(5):
                    group.start_soon(probe)
            assert answers == [503] * 5
            assert store.checks == 1
        finally:
            store.release.set()
        with anyio.fail_after(5):
            await store.answered.wait()
        # the check answered, but after the deadline: that probe's answer stays "not ready";
        # the next probe checks again
        store.hang = False
        assert (await health(api)).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if "health" in r.getMessage()]
    assert any("did not answer within 0.2 s" in w for w in warnings)


async def test_postgresql_a_check_blocked_by_a_lock_times_out_and_frees_its_thread(
    make_api: MakeApi,
    postgres_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg

    from datafn_sqlmodel import server_store

    monkeypatch.setattr(server_store, "READY_STATEMENT_TIMEOUT_MS", 200)
    async with make_api(store=postgres_url) as api:
        assert (await health(api)).status_code == 200
        with psycopg.connect(postgres_url.replace("+psycopg", "")) as locker:
            locker.execute("LOCK TABLE datafn_records_notes IN ACCESS EXCLUSIVE MODE")
            with anyio.fail_after(5):
                response = await health(api)
            assert response.status_code == 503
            locker.rollback()
        # the check itself failed (the statement timed out), not the probe's deadline
        warnings = [r.getMessage() for r in caplog.records if "health" in r.getMessage()]
        assert len(warnings) == 1 and "not ready" in warnings[0], warnings
        assert (await health(api)).status_code == 200
        with psycopg.connect(postgres_url.replace("+psycopg", "")) as conn:  # not left behind
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
            ).fetchone()
        assert row == (0,)
