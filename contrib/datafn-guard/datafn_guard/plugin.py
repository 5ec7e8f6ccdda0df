"""The guard plugin: the hook implementations, registered as the ``guard`` entry point.

``datafn_before_sync`` is fail-closed, so every refusal aborts the sync operation before
anything is sent (client) or executed (server). The guard runs last (``trylast``) among the
before-sync implementations: it checks the payload that will actually be sent, after other
plugins have replaced it.

The checks run in this order and stop at the first refusal: allowed phases, credentials,
payload size, batch size, allowed resources, schema, then the user rules in the order listed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datafn import Config, ConfigError, SchemaError, SyncContext, hookimpl
from datafn.config import SettingsRegistry
from datafn.models import is_import_path
from datafn.schema import Schema, load_schema
from datafn_guard.checks import (
    GuardVeto,
    Rule,
    check_allowed,
    check_batch_size,
    check_payload_size,
    check_schema,
    check_unnamed_allowed,
    load_rule,
    resource_refs,
)
from datafn_guard.settings import PHASES, GuardSettings

__all__ = ["GuardState", "datafn_add_settings", "datafn_before_sync", "datafn_configure"]

log = logging.getLogger("datafn_guard")

SECTION = "guard"
KEY = "tool.datafn.guard"


@dataclass(frozen=True)
class GuardState:
    """What ``datafn_configure`` derived from the configuration."""

    settings: GuardSettings = field(default_factory=GuardSettings)
    schema: Schema | None = None
    rules: tuple[Rule, ...] = ()
    client_has_credentials: bool = False


#: The plugin is a module, shared by every runtime of the process: the configuration booted
#: last applies (a client and an in-process server booted from the same pyproject.toml agree).
state = GuardState()


@hookimpl
def datafn_add_settings(settings: SettingsRegistry) -> None:
    settings.add(SECTION, GuardSettings)


@hookimpl
def datafn_configure(config: Config) -> None:
    global state
    settings: GuardSettings = config.section(SECTION)
    for side in ("client", "server"):
        for index, phase in enumerate(getattr(settings, side).phases or ()):
            if phase not in PHASES:
                raise ConfigError(
                    f"unknown phase {phase!r}; phases: {', '.join(PHASES)}",
                    key=f"{KEY}.{side}.phases[{index}]",
                )
    project_dir = config.pyproject.parent if config.pyproject else None
    schema = _schema(config, settings, project_dir)
    if schema is not None:
        for side in ("client", "server"):
            for index, name in enumerate(getattr(settings, side).resources or ()):
                if not schema.has_resource(name):
                    raise ConfigError(
                        f"no resource {name!r} in the schema",
                        key=f"{KEY}.{side}.resources[{index}]",
                    )
    rules = tuple(
        load_rule(path, key=f"{KEY}.rules[{index}]", project_dir=project_dir)
        for index, path in enumerate(settings.rules)
    )
    state = GuardState(settings, schema, rules, _client_has_credentials(config))


@hookimpl(trylast=True)
async def datafn_before_sync(phase: str, payload: Any, context: SyncContext) -> None:
    current = state
    settings = current.settings
    if not settings.enabled:
        return
    side = context.side
    allowed = settings.client if side == "client" else settings.server
    check_allowed(f"{side}.phases", allowed.phases, phase, "$", side)
    if settings.require_credentials:
        present = (
            current.client_has_credentials if side == "client" else context.identity is not None
        )
        if not present:
            why = (
                "no credentials are configured ([tool.datafn.http] token)"
                if side == "client"
                else "the request is not authenticated"
            )
            raise GuardVeto("require-credentials", why)
    if settings.max_payload_bytes is not None:
        check_payload_size(payload, settings.max_payload_bytes)
    if not isinstance(payload, dict):
        raise GuardVeto("schema", "the payload must be a JSON object", code="DFQL_INVALID")
    if settings.max_batch_size is not None:
        check_batch_size(phase, payload, settings.max_batch_size)
    if allowed.resources is not None:
        for name, path in resource_refs(phase, payload):
            check_allowed(f"{side}.resources", allowed.resources, name, path, side)
        check_unnamed_allowed(
            f"{side}.resources", allowed.resources, phase, payload, context.resources, side
        )
    if current.schema is not None:
        check_schema(phase, payload, current.schema)
    for rule in current.rules:
        await rule.check(phase, payload, context)


def _schema(config: Config, settings: GuardSettings, project_dir: Path | None) -> Schema | None:
    explicit = "validate_schema" in settings.model_fields_set
    if not settings.validate_schema:
        return None
    source = config.schema_source
    if source is None:
        if explicit:
            raise ConfigError(
                "needs a schema: set `schema` in [tool.datafn]", key=f"{KEY}.validate-schema"
            )
        return None
    if (
        isinstance(source, str)
        and project_dir is not None
        and not is_import_path(source)
        and not Path(source).is_absolute()
    ):
        source = project_dir / source
    try:
        return load_schema(source, base_dir=project_dir or config.base_dir)
    except SchemaError as exc:
        raise ConfigError(f"the schema cannot be loaded: {exc}", key="tool.datafn.schema") from exc


def _client_has_credentials(config: Config) -> bool:
    try:
        http = config.section("http")
    except ConfigError:  # the http transport is not installed: no credentials it could send
        return False
    headers = {name.lower() for name in getattr(http, "headers", {}) or {}}
    return bool(getattr(http, "token", None)) or "authorization" in headers
