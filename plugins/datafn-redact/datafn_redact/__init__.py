"""datafn-redact: drop or mask fields of outgoing mutations before they are pushed.

::

    [tool.datafn.redact]
    drop = ["todos.localNotes", "*.draft"]    # removed from the record that is sent
    mask = ["contacts.phone"]                 # string values replaced by `mask-with`
    mask-with = "•••"
    sides = ["client"]                        # "server" redacts what a server receives

Fields are named ``resource.field``; ``*`` stands for every resource. Only the copy that
leaves the device is redacted: the local record keeps every field. Do not drop a field the
schema requires on insert or replace: the server would refuse the mutation.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from datafn import Config, SyncContext, hookimpl
from datafn.config import SettingsRegistry

__all__ = ["RedactSettings"]


class RedactSettings(BaseModel):
    """``[tool.datafn.redact]``"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drop: list[str] = Field(default_factory=list, description="resource.field to remove")
    mask: list[str] = Field(default_factory=list, description="resource.field to mask")
    mask_with: str = "•••"
    sides: list[str] = Field(default_factory=lambda: ["client"])

    @field_validator("drop", "mask")
    @classmethod
    def _dotted(cls, names: list[str]) -> list[str]:
        for name in names:
            resource, _, field = name.partition(".")
            if not resource or not field:
                raise ValueError(f"expected 'resource.field' or '*.field', got {name!r}")
        return names


class _State:
    settings = RedactSettings()


@hookimpl
def datafn_add_settings(settings: SettingsRegistry) -> None:
    settings.add("redact", RedactSettings)


@hookimpl
def datafn_configure(config: Config) -> None:
    _State.settings = config.section("redact")


def _fields(names: list[str], resource: str) -> set[str]:
    out = set()
    for name in names:
        owner, _, field = name.partition(".")
        if owner in ("*", resource):
            out.add(field)
    return out


@hookimpl(tryfirst=True)
def datafn_before_sync(phase: str, payload: Any, context: SyncContext) -> Any:
    settings = _State.settings
    if phase not in ("push", "clone_up") or context.side not in settings.sides:
        return None
    if not (settings.drop or settings.mask) or not isinstance(payload, dict):
        return None
    redacted = copy.deepcopy(payload)
    for mutation in redacted.get("mutations") or ():
        record = mutation.get("record") if isinstance(mutation, dict) else None
        if not isinstance(record, dict):
            continue
        resource = str(mutation.get("resource"))
        for field in _fields(settings.drop, resource):
            record.pop(field, None)
        for field in _fields(settings.mask, resource):
            if isinstance(record.get(field), str):
                record[field] = settings.mask_with
    return redacted
