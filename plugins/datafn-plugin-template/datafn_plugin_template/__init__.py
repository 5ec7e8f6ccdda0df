"""datafn-plugin-template: refuse the sync phases listed in ``[tool.datafn.template]``.

It shows the three things most plugins do: declare typed settings (``datafn_add_settings``),
read them once configuration is loaded (``datafn_configure``), and take part in a phase
(``datafn_before_sync`` is fail-closed: raising :class:`datafn.Veto` aborts the operation).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from datafn import Config, SyncContext, Veto, hookimpl
from datafn.config import SettingsRegistry

PHASES = ("seed", "clone", "pull", "push", "clone_up", "reconcile")


class TemplateSettings(BaseModel):
    """``[tool.datafn.template]``"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deny_phases: list[str] = Field(default_factory=list, description="phases to refuse")
    sides: list[str] = Field(default_factory=lambda: ["client", "server"])


class _State:
    settings = TemplateSettings()


@hookimpl
def datafn_add_settings(settings: SettingsRegistry) -> None:
    settings.add("template", TemplateSettings)


@hookimpl
def datafn_configure(config: Config) -> None:
    chosen: TemplateSettings = config.section("template")
    unknown = [phase for phase in chosen.deny_phases if phase not in PHASES]
    if unknown:
        from datafn import ConfigError

        raise ConfigError(
            f"unknown phase {unknown[0]!r}; phases: {', '.join(PHASES)}",
            key="tool.datafn.template.deny-phases",
        )
    _State.settings = chosen


@hookimpl
def datafn_before_sync(phase: str, payload: Any, context: SyncContext) -> None:
    settings = _State.settings
    if phase in settings.deny_phases and context.side in settings.sides:
        raise Veto(f"phase {phase!r} is denied by [tool.datafn.template]", code="FORBIDDEN")
