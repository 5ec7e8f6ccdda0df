"""The DataFn server: an ASGI application serving the wire protocol, and its store contract.

Start one with ``datafn serve`` or build the ASGI app yourself::

    from datafn.server import create_app
    app = create_app(schema="schema.json", store="sqlite:///datafn.db")

and run it with uvicorn, or mount it into a Starlette/FastAPI application. Storage backends
implement :class:`ServerStore` and register with ``datafn_register_server_stores``.
"""

from __future__ import annotations

from datafn.server.app import DatafnServer, create_app, current_server, open_bus, open_store
from datafn.server.bus import MemoryNotificationBus, Notification, NotificationBus, Subscription
from datafn.server.memory import MemoryServerStore
from datafn.server.mutations import plan_push, plan_seed
from datafn.server.service import SyncService, fold_changes
from datafn.server.store import (
    Change,
    MutationError,
    PendingMutation,
    PushOutcome,
    ServerStore,
)

__all__ = [
    "Change",
    "DatafnServer",
    "MemoryNotificationBus",
    "MemoryServerStore",
    "MutationError",
    "Notification",
    "NotificationBus",
    "PendingMutation",
    "PushOutcome",
    "ServerStore",
    "Subscription",
    "SyncService",
    "create_app",
    "current_server",
    "fold_changes",
    "open_bus",
    "open_store",
    "plan_push",
    "plan_seed",
]
