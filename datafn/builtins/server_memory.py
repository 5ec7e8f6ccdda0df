"""Built-in plugin: the ``memory`` server store and the in-process ``memory`` notification bus.

The server modules are imported when a store or bus is built, so that booting a client does
not import the server.
"""

from __future__ import annotations

from typing import Any

from datafn.plugin import hookimpl
from datafn.registry import Registry


def memory_server_store(url: str, schema: Any, config: Any = None) -> Any:
    from datafn.server.memory import MemoryServerStore

    return MemoryServerStore(url, schema, config)


def memory_notification_bus(url: str, config: Any = None) -> Any:
    from datafn.server.bus import MemoryNotificationBus

    return MemoryNotificationBus(url, config)


@hookimpl
def datafn_register_server_stores(registry: Registry[Any]) -> None:
    registry.add("memory", memory_server_store, description="in-memory, for tests and demos")


@hookimpl
def datafn_register_notification_buses(registry: Registry[Any]) -> None:
    registry.add("memory", memory_notification_bus, description="in-process only")
