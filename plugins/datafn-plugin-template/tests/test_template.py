"""The template's own tests: they run against an installed datafn, inside or outside the repo."""

from __future__ import annotations

from pathlib import Path

import pytest

from datafn import ConfigError, Runtime, SyncContext, SyncVetoed


def project(tmp_path: Path, table: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(f'[project]\nname = "app"\n\n[tool.datafn.template]\n{table}\n')
    return path


def test_plugin_is_discovered_through_its_entry_point(tmp_path: Path) -> None:
    runtime = Runtime.boot(pyproject=project(tmp_path, ""), use_env=False)
    info = {p.name: p for p in runtime.plugins.plugins()}["template"]
    assert info.distribution == "datafn-plugin-template"
    assert "datafn_before_sync" in info.hooks


async def test_denied_phase_is_vetoed_and_others_pass(tmp_path: Path) -> None:
    runtime = Runtime.boot(pyproject=project(tmp_path, 'deny-phases = ["seed"]'), use_env=False)
    caller = runtime.plugins.caller
    context = SyncContext(side="client", client_id="c1")
    with pytest.raises(SyncVetoed) as info:
        await caller.before_sync("seed", {"data": {}}, context)
    assert info.value.plugin == "template"
    assert "denied" in str(info.value)
    assert await caller.before_sync("pull", {"cursors": {}}, context) == {"cursors": {}}


def test_bad_settings_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Runtime.boot(pyproject=project(tmp_path, 'deny-phases = ["sed"]'), use_env=False)
    assert str(info.value).startswith("tool.datafn.template.deny-phases: unknown phase 'sed'")
