"""The DataFn client: local tables at local speed, and the sync engine that keeps them in sync.

See ``docs/client.md``. The names here are also re-exported from :mod:`datafn`. Each is
imported from its module on first use (PEP 562), so ``datafn.Client`` does not pay for the
blocking facade's threads or the typed tables unless they are used.
"""

from __future__ import annotations

from datafn._lazy import lazy_exports as _lazy_exports

#: ``typing.TYPE_CHECKING`` without importing typing (type checkers treat the name alike)
TYPE_CHECKING = False
if TYPE_CHECKING:
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


__getattr__, __dir__ = _lazy_exports(globals(), _EXPORTS, __all__)
