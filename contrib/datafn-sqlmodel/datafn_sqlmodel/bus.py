"""Plugin module of datafn-sqlmodel: the PostgreSQL notification bus ``postgresql``.

The bus itself, :class:`~datafn_sqlmodel.pg_bus.PostgresNotificationBus`, is imported (with
psycopg and the server) only when a server selects it, not by every client and server that loads
this plugin. ``datafn_sqlmodel.bus.PostgresNotificationBus`` still names it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datafn.plugin import hookimpl

if TYPE_CHECKING:
    from datafn_sqlmodel.pg_bus import CHANNEL, PostgresNotificationBus

__all__ = ["CHANNEL", "PostgresNotificationBus"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from datafn_sqlmodel import pg_bus

        return getattr(pg_bus, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def postgres_notification_bus(url: str, config: Any = None) -> PostgresNotificationBus:
    """The ``postgresql`` bus factory: ``PostgresNotificationBus(url, config)``."""
    from datafn_sqlmodel.pg_bus import PostgresNotificationBus

    return PostgresNotificationBus(url, config)


@hookimpl
def datafn_register_notification_buses(registry: Any) -> None:
    registry.add(
        "postgresql",
        postgres_notification_bus,
        description="PostgreSQL LISTEN/NOTIFY, for several server processes on one database",
    )
