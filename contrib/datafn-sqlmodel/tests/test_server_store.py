"""The SQLite and PostgreSQL server stores run the server-store conformance suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from datafn.schema import Schema
from datafn.testing.server_store import MakeStore, ServerStoreSuite
from datafn_sqlmodel.server_store import SqlServerStore, records_table_name


class TestSqliteServerStore(ServerStoreSuite):
    persistent = True

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> MakeStore:
        url = f"sqlite:///{tmp_path / 'server.db'}"

        def make(schema: Schema) -> SqlServerStore:
            return SqlServerStore(url, schema)

        return make


class TestSqliteMemoryServerStore(ServerStoreSuite):
    persistent = False

    @pytest.fixture
    def make_store(self) -> MakeStore:
        def make(schema: Schema) -> SqlServerStore:
            return SqlServerStore("sqlite://", schema)

        return make


@pytest.mark.postgres
class TestPostgresqlServerStore(ServerStoreSuite):
    persistent = True

    @pytest.fixture
    def make_store(self, postgres_url: str) -> MakeStore:
        def make(schema: Schema) -> SqlServerStore:
            return SqlServerStore(postgres_url, schema)

        return make


def test_long_resource_names_get_short_unique_tables() -> None:
    a, b = "r" * 63, "r" * 62 + "s"
    assert len(records_table_name(a)) <= 63 and records_table_name(a) != records_table_name(b)
    assert records_table_name("todos") == "datafn_records_todos"
