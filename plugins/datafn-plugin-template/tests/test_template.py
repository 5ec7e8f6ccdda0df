"""The template's own tests: they run against an installed datafn, inside or outside the repo,
with the fixtures of the opt-in ``datafn.testing.pytest_plugin``."""

from __future__ import annotations

from typing import Any

import pytest

from datafn import ConfigError, SyncContext, SyncVetoed


def test_plugin_is_discovered_through_its_entry_point(datafn_project: Any) -> None:
    datafn_project.write("[tool.datafn.template]\n")
    info = {p.name: p for p in datafn_project.boot().plugins.plugins()}["template"]
    assert info.distribution == "datafn-plugin-template"
    assert "datafn_before_sync" in info.hooks


async def test_denied_phase_is_vetoed_and_others_pass(
    datafn_project: Any, hook_recorder: Any
) -> None:
    datafn_project.write('[tool.datafn.template]\ndeny-phases = ["seed"]\n')
    later = hook_recorder("datafn_before_sync", trylast=True)
    caller = datafn_project.boot(plugins=[later]).plugins.caller
    context = SyncContext(side="client", client_id="c1")
    with pytest.raises(SyncVetoed) as info:
        await caller.before_sync("seed", {"data": {}}, context)
    assert info.value.plugin == "template"
    assert "denied" in str(info.value)
    assert later.calls == [], "no policy runs after a veto"
    assert await caller.before_sync("pull", {"cursors": {}}, context) == {"cursors": {}}
    assert later.phases() == ["pull"]


def test_bad_settings_name_the_key(datafn_project: Any) -> None:
    datafn_project.write('[tool.datafn.template]\ndeny-phases = ["sed"]\n')
    with pytest.raises(ConfigError) as info:
        datafn_project.boot()
    assert str(info.value).startswith("tool.datafn.template.deny-phases: unknown phase 'sed'")
