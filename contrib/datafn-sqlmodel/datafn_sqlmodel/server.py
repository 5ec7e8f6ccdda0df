"""Server stores on SQLite and PostgreSQL (plugin module of datafn-sqlmodel).

``database = "sqlite:///datafn.db"`` selects ``sqlite``; ``postgresql+psycopg://…`` (or
``postgresql://…``) selects ``postgresql``. SQLAlchemy is imported when a store is built.
"""

from __future__ import annotations

from typing import Any

from datafn.plugin import hookimpl
from datafn.registry import Registry


def sql_server_store(url: str, schema: Any, config: Any = None) -> Any:
    from datafn_sqlmodel.server_store import SqlServerStore

    return SqlServerStore(url, schema, config)


@hookimpl
def datafn_register_server_stores(registry: Registry[Any]) -> None:
    registry.add("sqlite", sql_server_store, description="SQLite file (WAL), one writer at a time")
    registry.add("postgresql", sql_server_store, description="PostgreSQL via psycopg 3")
