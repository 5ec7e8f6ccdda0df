"""Context objects handed to policy hooks: who is syncing, on which side, in which namespace."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["DEFAULT_NAMESPACE", "Identity", "RequestContext", "Side", "SyncContext"]

#: The namespace of a request when no plugin resolves another one.
DEFAULT_NAMESPACE = "datafn"

Side = Literal["client", "server"]


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: ``subject`` (e.g. a user id) and free-form ``claims``."""

    subject: str
    claims: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestContext:
    """What the server knows about one request when it asks ``datafn_authorize``."""

    action: str
    identity: Identity | None
    namespace: str
    headers: Mapping[str, str] = field(default_factory=dict)
    client_host: str | None = None


@dataclass(frozen=True)
class SyncContext:
    """What a ``datafn_before_sync`` / ``datafn_after_sync`` implementation is told.

    ``side`` is ``"client"`` or ``"server"``; ``namespace`` and ``identity`` are only known on
    the server; ``resources`` are the resources the operation concerns (on the server, for
    the forms that name none, a clone without ``tables`` and the global-cursor pull, every
    resource they answer: all but the remote-only ones).
    """

    side: Side
    client_id: str | None = None
    namespace: str | None = None
    identity: Identity | None = None
    resources: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
