"""Named registries of backends (stores, transports, channels, triggers, buses) filled by plugins.

Plugins add factories under a name in a ``datafn_register_*`` hook; configuration then selects
one by name (``store = "sqlite:///app.db"`` selects the client store ``sqlite``). A name that no
installed plugin registered raises :class:`~datafn.errors.UnknownBackendError`, which names the
distribution to install when the name is one datafn knows about.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from datafn.errors import PluginError, UnknownBackendError

__all__ = ["KNOWN_DISTRIBUTIONS", "Registration", "Registry", "backend_name"]

T = TypeVar("T", bound=Callable[..., Any])

#: Which distribution provides a well-known backend name, per registry kind.
KNOWN_DISTRIBUTIONS: dict[tuple[str, str], str] = {
    ("client store", "sqlite"): "datafn-sqlmodel",
    ("server store", "sqlite"): "datafn-sqlmodel",
    ("server store", "postgresql"): "datafn-sqlmodel",
    ("notification bus", "postgresql"): "datafn-sqlmodel",
    ("realtime channel", "websockets"): "datafn-websockets",
}


@dataclass(frozen=True)
class Registration(Generic[T]):
    name: str
    factory: T
    plugin: str | None
    description: str


class Registry(Generic[T]):
    """Factories of one kind of backend, by name (``registry.add("sqlite", SqliteStore)``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Registration[T]] = {}
        #: The plugin whose registration hook is running (set by the plugin manager).
        self.current_plugin: str | None = None

    def add(self, name: str, factory: T, *, plugin: str | None = None, description: str = "") -> T:
        """Register ``factory`` under ``name``; a second registration of a name is an error."""
        plugin = plugin or self.current_plugin
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise PluginError(f"invalid {self.kind} name {name!r}", plugin=plugin)
        if name in self._entries:
            other = self._entries[name].plugin
            raise PluginError(
                f"{self.kind} {name!r} registered twice (by {other!r} and {plugin!r})",
                plugin=plugin,
            )
        self._entries[name] = Registration(name, factory, plugin, description)
        return factory

    def get(self, name: str) -> T:
        """The factory registered as ``name``; raises UnknownBackendError naming what to install."""
        try:
            return self._entries[name].factory
        except KeyError:
            raise UnknownBackendError(
                self.kind,
                name,
                available=list(self._entries),
                distribution=KNOWN_DISTRIBUTIONS.get((self.kind, name)),
            ) from None

    def registration(self, name: str) -> Registration[T]:
        self.get(name)
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Registration[T]]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


def backend_name(url: str) -> str:
    """The backend a store URL selects: its scheme without a driver suffix.

    ``sqlite:///app.db`` → ``sqlite``; ``postgresql+psycopg://…`` → ``postgresql``;
    ``memory://`` or ``memory`` → ``memory``.
    """
    scheme = urlsplit(url).scheme if "://" in url or url.endswith(":") else url
    return scheme.split("+", 1)[0].lower()
