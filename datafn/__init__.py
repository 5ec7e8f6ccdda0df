"""datafn: an offline-first sync engine speaking the DataFn wire protocol.

Apps read and write a local store at local speed, online or not; the sync engine clones,
pulls, pushes, bulk-uploads (clone_up), reconciles and seeds against a DataFn server.
Everything beyond the small kernel is a plugin (see :mod:`datafn.plugin`).

``import datafn`` is cheap: each public name is imported from its module the first time it is
used (``datafn.Client`` imports the client, pydantic and the rest then), so a command-line tool
that only needs part of the package does not pay for the whole of it at start-up.
"""

from __future__ import annotations

from datafn._lazy import lazy_exports as _lazy_exports

#: ``typing.TYPE_CHECKING`` without importing typing (type checkers treat the name alike)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from datafn.client import BlockingClient, Client, ModelTable, Table
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

#: Public name → the module it is imported from on first use.
_EXPORTS = {
    "BlockingClient": "datafn.client.blocking",
    "Client": "datafn.client.client",
    "Table": "datafn.client.client",
    "ModelTable": "datafn.client.typed",
    "Config": "datafn.config",
    "load_config": "datafn.config",
    "Identity": "datafn.context",
    "RequestContext": "datafn.context",
    "SyncContext": "datafn.context",
    **dict.fromkeys(
        (
            "ConfigError",
            "Conflict",
            "DatafnError",
            "Forbidden",
            "HookFailed",
            "MissingPluginError",
            "NotFound",
            "PluginError",
            "ProtocolError",
            "SchemaError",
            "SchemaMismatch",
            "ServiceUnavailable",
            "StoreError",
            "SyncVetoed",
            "TransportError",
            "UnknownBackendError",
            "ValidationFailed",
            "Veto",
        ),
        "datafn.errors",
    ),
    "Event": "datafn.events",
    "EventBus": "datafn.events",
    "EventContext": "datafn.events",
    "hookimpl": "datafn.plugin",
    "Runtime": "datafn.runtime",
}

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
    "ModelTable",
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


__getattr__, __dir__ = _lazy_exports(globals(), _EXPORTS, __all__)
