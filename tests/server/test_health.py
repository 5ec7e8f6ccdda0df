"""``GET <base>/health``: ready or not, without credentials, revealing nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from datafn.context import Identity
from datafn.errors import Forbidden
from datafn.plugin import hookimpl

from .conftest import MakeApi, mutation

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
