"""The one exception tree of datafn.

Every exception datafn raises derives from :class:`DatafnError`::

    DatafnError
    ├── ConfigError                  bad configuration value (carries the full key path)
    ├── SchemaError                  a schema that does not validate (carries the JSON path)
    ├── PluginError                  a plugin could not be loaded or misbehaved
    │   ├── MissingPluginError       a required plugin is not installed / not allowed
    │   ├── UnknownBackendError      a registry name nobody registered (names the distribution)
    │   └── HookFailed               a hook implementation raised or timed out (names the plugin)
    │       └── SyncVetoed           a fail-closed ``datafn_before_sync`` aborted a sync operation
    ├── ProtocolError                an error envelope of the DataFn wire protocol
    │   ├── ValidationFailed         DFQL_INVALID / DFQL_UNKNOWN_* / SCHEMA_INVALID / LIMIT_EXCEEDED
    │   ├── Forbidden                FORBIDDEN
    │   ├── NotFound                 NOT_FOUND
    │   ├── Conflict                 CONFLICT
    │   ├── ServiceUnavailable       SERVICE_UNAVAILABLE
    │   ├── CursorExpired            CURSOR_EXPIRED (a pull cursor older than the change log)
    │   ├── TransportError           TRANSPORT_ERROR (client side: the server could not be reached)
    │   └── SchemaMismatch           the server's schema is incompatible (client side only)
    ├── StoreError                   a local or server store failed
    └── Veto                         raised by a before-sync policy to abort an operation

A :class:`ProtocolError` is what travels on the wire: it has a ``code``, a ``message`` and
``details`` whose ``path`` is always present (``"$"`` when nothing narrower applies).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ERROR_CODES",
    "RETRYABLE_CODES",
    "VALIDATION_CODES",
    "ConfigError",
    "Conflict",
    "CursorExpired",
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
    "error_from_envelope",
]

#: The codes of :class:`ValidationFailed`: a request (or a mutation) refused for what it holds.
VALIDATION_CODES = frozenset(
    {
        "DFQL_INVALID",
        "DFQL_UNKNOWN_RESOURCE",
        "DFQL_UNKNOWN_FIELD",
        "DFQL_UNSUPPORTED",
        "SCHEMA_INVALID",
        "LIMIT_EXCEEDED",
    }
)

#: Every error code of the wire protocol.
ERROR_CODES = VALIDATION_CODES | {
    "FORBIDDEN",
    "NOT_FOUND",
    "CONFLICT",
    "CURSOR_EXPIRED",
    "INTERNAL",
    "MUTATION_FAILED",
    "NAMESPACE_INVALID",
    "SERVICE_UNAVAILABLE",
    "TRANSPORT_ERROR",
}

#: Codes a push reports with ``retryable: true``.
RETRYABLE_CODES = frozenset({"INTERNAL", "MUTATION_FAILED", "FORBIDDEN", "NOT_FOUND"})


class DatafnError(Exception):
    """Base class of every datafn exception."""


class ConfigError(DatafnError):
    """A configuration value is missing or invalid.

    ``key`` is the full key path as the user wrote it, e.g.
    ``tool.datafn.sync.push-batch-size``.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.reason = message


class SchemaError(DatafnError):
    """A schema does not validate; ``path`` is the JSON path of the offending value."""

    def __init__(self, message: str, *, path: str = "$") -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


class PluginError(DatafnError):
    """A plugin could not be loaded, registered or called."""

    def __init__(self, message: str, *, plugin: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin


class MissingPluginError(PluginError):
    """A plugin named in ``required-plugins`` is not installed or not allowed."""


class UnknownBackendError(PluginError):
    """A store, transport, channel, trigger or bus name that no plugin registered."""

    def __init__(
        self, kind: str, name: str, *, available: list[str], distribution: str | None = None
    ) -> None:
        hint = (
            f"install the {distribution!r} distribution (it ships with datafn's sources: "
            f"pip install ./contrib/{distribution} from a checkout)"
            if distribution
            else f"installed: {', '.join(sorted(available)) or 'none'}"
        )
        super().__init__(f"no {kind} named {name!r} is installed; {hint}")
        self.kind = kind
        self.name = name
        self.available = sorted(available)
        self.distribution = distribution


class HookFailed(PluginError):
    """A hook implementation raised, vetoed or timed out; ``plugin`` names it."""

    def __init__(self, hook: str, plugin: str, cause: BaseException | str) -> None:
        reason = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"{hook} failed in plugin {plugin!r}: {reason}", plugin=plugin)
        self.hook = hook
        self.reason = reason
        self.cause = cause if isinstance(cause, BaseException) else None


class SyncVetoed(HookFailed):
    """A fail-closed ``datafn_before_sync`` implementation aborted a sync operation."""

    def __init__(
        self, phase: str, plugin: str, cause: BaseException | str, *, veto: Veto | None = None
    ) -> None:
        super().__init__("datafn_before_sync", plugin, cause)
        self.phase = phase
        #: The Veto the plugin raised or returned, if it vetoed explicitly (code and path).
        self.veto = veto
        self.args = (f"{phase} vetoed by plugin {plugin!r}: {self.reason}",)


class Veto(DatafnError):
    """Raised (or returned) by a ``datafn_before_sync`` hook to abort a sync operation.

    ``code`` and ``path`` become the error envelope when the veto happens on the server.
    """

    def __init__(self, reason: str, *, code: str = "FORBIDDEN", path: str = "$") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.path = path


class ProtocolError(DatafnError):
    """An error of the DataFn wire protocol: ``code``, ``message`` and ``details.path``."""

    code: str = "INTERNAL"
    http_status: int = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        path: str = "$",
        details: dict[str, Any] | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status
        self.details: dict[str, Any] = {**(details or {}), "path": path}

    @property
    def path(self) -> str:
        return str(self.details["path"])

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES

    def to_envelope(self) -> dict[str, Any]:
        """The failure envelope of the wire protocol."""
        return {
            "ok": False,
            "error": {"code": self.code, "message": self.message, "details": self.details},
        }

    def __str__(self) -> str:
        return f"{self.code} at {self.path}: {self.message}"


class ValidationFailed(ProtocolError):
    """A request or record failed validation: DFQL_*, SCHEMA_INVALID, LIMIT_EXCEEDED."""

    code = "DFQL_INVALID"
    http_status = 400


class Forbidden(ProtocolError):
    code = "FORBIDDEN"
    http_status = 403


class NotFound(ProtocolError):
    code = "NOT_FOUND"
    http_status = 404


class Conflict(ProtocolError):
    code = "CONFLICT"
    http_status = 409


class ServiceUnavailable(ProtocolError):
    code = "SERVICE_UNAVAILABLE"
    http_status = 503


class CursorExpired(ProtocolError):
    """A pull cursor is older than what the server's change log can still answer correctly: a
    change it needs was compacted away (a delete older than ``tombstone-ttl``). The client must
    clone the resources named in ``details["resources"]`` again; a pull from that cursor is
    refused until it does. Not retryable as it is."""

    code = "CURSOR_EXPIRED"
    http_status = 410


class TransportError(ProtocolError):
    """Client side: the server could not be reached or answered something that is no envelope."""

    code = "TRANSPORT_ERROR"
    http_status = 0


class SchemaMismatch(ProtocolError):
    """The server's schema is not compatible with the client's (client side only): nothing is
    synced, and no local write is dropped, until one side is migrated.

    ``details["differences"]`` lists what differs, one sentence each.
    """

    code = "SCHEMA_MISMATCH"
    http_status = 409


class StoreError(DatafnError):
    """A local or server store failed."""


_BY_CODE: dict[str, type[ProtocolError]] = {
    "FORBIDDEN": Forbidden,
    "NOT_FOUND": NotFound,
    "CONFLICT": Conflict,
    "CURSOR_EXPIRED": CursorExpired,
    "SERVICE_UNAVAILABLE": ServiceUnavailable,
    "TRANSPORT_ERROR": TransportError,
    "DFQL_INVALID": ValidationFailed,
    "DFQL_UNKNOWN_RESOURCE": ValidationFailed,
    "DFQL_UNKNOWN_FIELD": ValidationFailed,
    "DFQL_UNSUPPORTED": ValidationFailed,
    "SCHEMA_INVALID": ValidationFailed,
    "LIMIT_EXCEEDED": ValidationFailed,
    "NAMESPACE_INVALID": ValidationFailed,
}


def error_from_envelope(error: dict[str, Any], *, http_status: int | None = None) -> ProtocolError:
    """Turn the ``error`` object of a failure envelope back into the matching exception."""
    code = str(error.get("code") or "INTERNAL")
    details = error.get("details") if isinstance(error.get("details"), dict) else {}
    assert isinstance(details, dict)
    path = str(details.get("path", "$"))
    cls = _BY_CODE.get(code, ProtocolError)
    return cls(
        str(error.get("message", "")),
        code=code,
        path=path,
        details={k: v for k, v in details.items() if k != "path"},
        http_status=http_status,
    )
