"""datafn: an offline-first sync engine speaking the DataFn wire protocol.

Apps read and write a local store at local speed, online or not; the sync engine clones,
pulls, pushes, bulk-uploads (clone_up), reconciles and seeds against a DataFn server.
Everything beyond the small kernel is a plugin (see :mod:`datafn.plugin`).
"""

from __future__ import annotations

from datafn.client import BlockingClient, Client, Table
from datafn.config import Config, load_config
from datafn.context import Identity, RequestContext, SyncContext
from datafn.errors import (
    ConfigError,
    Conflict,
    DatafnError,
    Forbidden,
    HookFailed,
    MissingPluginError,
    NotFound,
    PluginError,
    ProtocolError,
    SchemaError,
    SchemaMismatch,
    ServiceUnavailable,
    StoreError,
    SyncVetoed,
    TransportError,
    UnknownBackendError,
    ValidationFailed,
    Veto,
)
from datafn.events import Event, EventBus, EventContext
from datafn.plugin import hookimpl
from datafn.runtime import Runtime

__version__ = "0.1.0"

__all__ = [
    "BlockingClient",
    "Client",
    "Config",
    "ConfigError",
    "Conflict",
    "DatafnError",
    "Event",
    "EventBus",
    "EventContext",
    "Forbidden",
    "HookFailed",
    "Identity",
    "MissingPluginError",
    "NotFound",
    "PluginError",
    "ProtocolError",
    "RequestContext",
    "Runtime",
    "SchemaError",
    "SchemaMismatch",
    "ServiceUnavailable",
    "StoreError",
    "SyncContext",
    "SyncVetoed",
    "Table",
    "TransportError",
    "UnknownBackendError",
    "ValidationFailed",
    "Veto",
    "__version__",
    "hookimpl",
    "load_config",
]
