"""datafn-stamp: stamp ``updatedAt`` / ``updatedBy`` on every outgoing insert, replace and merge.

::

    [tool.datafn.stamp]
    user = "alice"                 # or user-env = "USER"; on the server: the authenticated subject
    updated-at = "updatedAt"       # field names; a resource is stamped only if it has the field
    updated-by = "updatedBy"
    sides = ["client"]             # where to stamp: "client" (before push), "server" (on receipt)

Only resources of the project's schema (``schema`` in ``[tool.datafn]``) that have the
field are stamped; without a schema the plugin does nothing. The stamp goes into the mutation
that is sent (or received), not into the local copy: the stamped record comes back with the
next clone or pull. A ``date`` field gets an ISO-8601 UTC time, a ``number`` field epoch
milliseconds. The payload is replaced, never modified in place.
"""

from __future__ import annotations

import copy
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from datafn import Config, SyncContext, hookimpl
from datafn.config import SettingsRegistry
from datafn.models import is_import_path
from datafn.schema import Schema, load_schema

__all__ = ["StampSettings"]


class StampSettings(BaseModel):
    """``[tool.datafn.stamp]``"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    updated_at: str = Field("updatedAt", description="field that receives the time")
    updated_by: str = Field("updatedBy", description="field that receives the user")
    user: str | None = Field(None, description="who writes (client side)")
    user_env: str | None = Field(None, description="environment variable holding the user")
    sides: list[str] = Field(default_factory=lambda: ["client"])


class _State:
    settings = StampSettings()
    schema: Schema | None = None


@hookimpl
def datafn_add_settings(settings: SettingsRegistry) -> None:
    settings.add("stamp", StampSettings)


@hookimpl
def datafn_configure(config: Config) -> None:
    _State.settings = config.section("stamp")
    source = config.schema_source
    if (
        isinstance(source, str)
        and config.pyproject
        and not is_import_path(source)
        and not Path(source).is_absolute()
    ):
        source = config.pyproject.parent / source
    _State.schema = load_schema(source, base_dir=config.base_dir) if source is not None else None


def _user(context: SyncContext) -> str | None:
    settings = _State.settings
    if context.side == "server" and context.identity is not None:
        return context.identity.subject
    if settings.user_env:
        return os.environ.get(settings.user_env) or settings.user
    return settings.user


def _stamp_value(kind: str, now: datetime) -> Any:
    if kind == "number":
        return int(now.timestamp() * 1000)
    return now.isoformat().replace("+00:00", "Z")


@hookimpl(tryfirst=True)
def datafn_before_sync(phase: str, payload: Any, context: SyncContext) -> Any:
    settings, schema = _State.settings, _State.schema
    if phase not in ("push", "clone_up") or context.side not in settings.sides or schema is None:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("mutations"), list):
        return None
    now = datetime.now(UTC)
    user = _user(context)
    stamped = copy.deepcopy(payload)
    for mutation in stamped["mutations"]:
        record = mutation.get("record") if isinstance(mutation, dict) else None
        if mutation.get("operation") == "delete" or not isinstance(record, dict):
            continue
        if not schema.has_resource(mutation.get("resource")):
            continue
        spec = schema.resource(mutation["resource"])
        at, by = spec.field(settings.updated_at), spec.field(settings.updated_by)
        if at is not None:
            record[settings.updated_at] = _stamp_value(at.type, now)
        if by is not None and user is not None:
            record[settings.updated_by] = user
    return stamped
