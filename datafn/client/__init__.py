"""The DataFn client: local tables at local speed, and the sync engine that keeps them in sync.

See ``docs/client.md``. The names here are also re-exported from :mod:`datafn`. Each is
imported from its module on first use (PEP 562), so ``datafn.Client`` does not pay for the
blocking facade's threads or the typed tables unless they are used.
"""

from __future__ import annotations

import importlib

#: ``typing.TYPE_CHECKING`` without importing typing (type checkers treat the name alike)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from datafn.client.blocking import (
        BlockingClient,
        BlockingModelTable,
        BlockingSync,
        BlockingTable,
    )
    from datafn.client.client import Client, Table
    from datafn.client.engine import SyncEngine
    from datafn.client.reports import (
        CloneProgress,
        CloneReport,
        CloneUpReport,
        PullReport,
        PushReport,
        ReconcileReport,
        RejectedMutation,
        StuckState,
        SyncStatus,
    )
    from datafn.client.store import (
        ChangelogEntry,
        ClientStore,
        Hydration,
        LocalWrite,
        PullPage,
        Query,
        ResourceState,
    )
    from datafn.client.transport import Transport
    from datafn.client.typed import ModelTable

#: Public name → the module it is imported from on first use.
_EXPORTS = {
    **dict.fromkeys(
        ("BlockingClient", "BlockingModelTable", "BlockingSync", "BlockingTable"),
        "datafn.client.blocking",
    ),
    "Client": "datafn.client.client",
    "Table": "datafn.client.client",
    "SyncEngine": "datafn.client.engine",
    **dict.fromkeys(
        (
            "CloneProgress",
            "CloneReport",
            "CloneUpReport",
            "PullReport",
            "PushReport",
            "ReconcileReport",
            "RejectedMutation",
            "StuckState",
            "SyncStatus",
        ),
        "datafn.client.reports",
    ),
    **dict.fromkeys(
        (
            "ChangelogEntry",
            "ClientStore",
            "Hydration",
            "LocalWrite",
            "PullPage",
            "Query",
            "ResourceState",
        ),
        "datafn.client.store",
    ),
    "Transport": "datafn.client.transport",
    "ModelTable": "datafn.client.typed",
}

__all__ = [
    "BlockingClient",
    "BlockingModelTable",
    "BlockingSync",
    "BlockingTable",
    "ChangelogEntry",
    "Client",
    "ClientStore",
    "CloneProgress",
    "CloneReport",
    "CloneUpReport",
    "Hydration",
    "LocalWrite",
    "ModelTable",
    "PullPage",
    "PullReport",
    "PushReport",
    "Query",
    "ReconcileReport",
    "RejectedMutation",
    "ResourceState",
    "StuckState",
    "SyncEngine",
    "SyncStatus",
    "Table",
    "Transport",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use, then keep it here."""
    module = _EXPORTS.get(name)
    if module is None:
        # a submodule reached as an attribute (``datafn.client.store.X``), as before the
        # names were lazy: imported now, like ``import datafn.client.<name>`` would
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
        raise AttributeError(f"module 'datafn.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
