"""Loading the bus plugin imports neither psycopg nor the server: every client and server that
has datafn-sqlmodel installed loads it, and only a server that selects the bus needs them."""

from __future__ import annotations

from pathlib import Path

from datafn.plugin.manager import PluginManager
from datafn.testing.imports import modules_loaded
from datafn_sqlmodel import bus
from datafn_sqlmodel.pg_bus import CHANNEL, PostgresNotificationBus


def test_loading_the_plugin_imports_neither_psycopg_nor_the_server(tmp_path: Path) -> None:
    assert (
        modules_loaded(
            "import datafn_sqlmodel.bus", ("psycopg", "datafn.server", "starlette"), cwd=tmp_path
        )
        == []
    )


def test_the_registered_factory_builds_the_bus_without_connecting() -> None:
    manager = PluginManager()
    manager.register(bus, name="sqlmodel-bus")
    factory = manager.registry("notification bus").get("postgresql")
    built = factory("postgresql+psycopg://app@db.example/app", None)
    assert isinstance(built, PostgresNotificationBus)
    assert built.dsn == "postgresql://app@db.example/app"
    assert built.channel == CHANNEL


def test_the_module_still_names_the_bus() -> None:
    assert bus.PostgresNotificationBus is PostgresNotificationBus
    assert bus.CHANNEL == CHANNEL
