"""The DataFn client: local tables at local speed, and the sync engine that keeps them in sync.

See ``docs/client.md``. The names here are also re-exported from :mod:`datafn`.
"""

from __future__ import annotations

from datafn.client.blocking import BlockingClient, BlockingSync, BlockingTable
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

__all__ = [
    "BlockingClient",
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
    "PullPage",
    "PullReport",
    "PushReport",
    "Query",
    "ReconcileReport",
    "RejectedMutation",
    "ResourceState",
    "SyncEngine",
    "SyncStatus",
    "Table",
    "Transport",
]
