"""Discovery through entry points, allow and block lists, required plugins, validation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from datafn import ConfigError, MissingPluginError, PluginError, Runtime, hookimpl
from datafn.plugin.manager import PluginManager

WritePyproject = Callable[[Path, str], Path]


def names(runtime: Runtime) -> set[str]:
    return {info.name for info in runtime.plugins.plugins()}


def test_installed_distribution_is_discovered_with_its_config_table(
    project: Path, write_pyproject: WritePyproject
) -> None:
    write_pyproject(project, '[tool.datafn.template]\ndeny-phases = ["reconcile"]\n')
    runtime = Runtime.boot()
    info = {p.name: p for p in runtime.plugins.plugins()}
    assert info["template"].distribution == "datafn-plugin-template"
    assert info["template"].version == "0.1.0"
    assert info["template"].builtin is False
    assert set(info["template"].hooks) >= {"datafn_add_settings", "datafn_before_sync"}
    assert info["eventlog"].builtin is True
    assert runtime.config.section("template").deny_phases == ["reconcile"]


def test_plugin_settings_errors_name_the_key(
    project: Path, write_pyproject: WritePyproject
) -> None:
    write_pyproject(project, '[tool.datafn.template]\ndeny-phases = "seed"\n')
    with pytest.raises(ConfigError) as info:
        Runtime.boot()
    assert str(info.value) == (
        'tool.datafn.template.deny-phases: expected a list of strings, got "seed"'
    )


def test_block_by_config(project: Path, write_pyproject: WritePyproject) -> None:
    write_pyproject(project, '[tool.datafn]\ndisable-plugins = ["template"]\n')
    runtime = Runtime.boot()
    assert "template" not in names(runtime)
    assert [(s.name, s.reason) for s in runtime.plugins.skipped] == [("template", "blocked")]


def test_block_by_environment(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAFN_DISABLE_PLUGINS", "template,eventlog")
    assert names(Runtime.boot()).isdisjoint({"template", "eventlog"})


def test_allow_list_keeps_builtins_and_drops_other_third_party_plugins(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAFN_PLUGINS", "eventlog")  # a built-in: no third-party plugin
    loaded = names(Runtime.boot())
    assert "eventlog" in loaded
    assert "template" not in loaded
    monkeypatch.setenv("DATAFN_PLUGINS", "template")
    assert "template" in names(Runtime.boot())


def test_autoload_off_loads_builtins_and_allowed_only(
    project: Path, write_pyproject: WritePyproject, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_pyproject(project, "[tool.datafn]\ndisable-plugin-autoload = true\n")
    loaded = names(Runtime.boot())
    assert "eventlog" in loaded and "template" not in loaded
    monkeypatch.setenv("DATAFN_PLUGINS", "template")
    assert "template" in names(Runtime.boot())


def test_missing_required_plugin_fails_fast(project: Path, write_pyproject: WritePyproject) -> None:
    write_pyproject(
        project, '[tool.datafn]\nrequired-plugins = ["template", "datafn-no-such-plugin", "x>=1"]\n'
    )
    with pytest.raises(MissingPluginError) as info:
        Runtime.boot()
    assert "datafn-no-such-plugin" in str(info.value) and "x>=1" in str(info.value)
    assert "template" not in str(info.value).split("missing:")[1].split(",")[0]


def test_required_plugin_by_distribution_and_version(project: Path) -> None:
    Runtime.boot(required_plugins=["datafn-plugin-template>=0.1"])
    with pytest.raises(MissingPluginError, match=r"found version 0\.1\.0"):
        Runtime.boot(required_plugins=["datafn-plugin-template>=9"])


def test_required_plugin_that_is_blocked_is_missing(project: Path) -> None:
    with pytest.raises(MissingPluginError, match="template"):
        Runtime.boot(required_plugins=["template"], disable_plugins=["template"])


def test_hook_name_typo_is_refused_naming_the_plugin(project: Path) -> None:
    class Typo:
        @hookimpl
        def datafn_before_synk(self, phase: str) -> None: ...

    with pytest.raises(PluginError) as info:
        Runtime.boot(plugins=[Typo()])
    assert "Typo" in str(info.value) and "datafn_before_synk" in str(info.value)


def test_unknown_argument_name_is_refused(project: Path) -> None:
    class BadArgs:
        @hookimpl
        def datafn_after_sync(self, phase: str, nonsense: int) -> None: ...

    with pytest.raises(PluginError, match="nonsense"):
        Runtime.boot(plugins=[BadArgs()])


def test_async_hooks_cannot_be_wrappers(project: Path) -> None:
    class Wrapper:
        @hookimpl(wrapper=True)
        def datafn_before_sync(self, phase: str):  # type: ignore[no-untyped-def]
            return (yield)

    manager = PluginManager()
    with pytest.raises(PluginError, match="cannot be a wrapper"):
        manager.register(Wrapper(), name="wrapper")
    assert not manager.pm.has_plugin("wrapper")


def test_plugin_that_fails_to_import_names_itself(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata as md

    broken = md.EntryPoint(name="broken", value="datafn_no_such_module", group="datafn")
    real = md.entry_points

    def fake_entry_points(**kwargs: str) -> md.EntryPoints:
        found = real(**kwargs)
        return md.EntryPoints([*found, broken]) if kwargs.get("group") == "datafn" else found

    monkeypatch.setattr(md, "entry_points", fake_entry_points)
    with pytest.raises(PluginError) as info:
        Runtime.boot()
    assert "'broken'" in str(info.value) and "failed to import" in str(info.value)


def test_hyphenated_section_names_read_their_table(
    project: Path, write_pyproject: WritePyproject
) -> None:
    from pydantic import BaseModel

    class Limits(BaseModel):
        max_items: int = 1

    class Declares:
        @hookimpl
        def datafn_add_settings(self, settings: Any) -> None:
            settings.add("my-plugin", Limits)

    write_pyproject(project, "[tool.datafn.my-plugin]\nmax-items = 7\n")
    runtime = Runtime.boot(plugins=[Declares()])
    assert runtime.config.section("my-plugin").max_items == 7
    write_pyproject(project, '[tool.datafn.my-plugin]\nmax-items = "many"\n')
    with pytest.raises(
        ConfigError, match=r"^tool\.datafn\.my-plugin\.max-items: expected an integer"
    ):
        Runtime.boot(plugins=[Declares()])


def test_a_misspelt_allowed_plugin_is_an_error_with_a_suggestion(
    project: Path, write_pyproject: WritePyproject
) -> None:
    write_pyproject(project, '[tool.datafn]\nplugins = ["gaurd"]\n')
    with pytest.raises(ConfigError) as info:
        Runtime.boot()
    assert str(info.value) == (
        "tool.datafn.plugins: no installed plugin is named 'gaurd'; did you mean 'guard'?"
    )
    write_pyproject(project, '[tool.datafn]\nplugins = ["datafn-guard"]\n')
    with pytest.raises(ConfigError, match="'datafn-guard' is a distribution, its plugins are"):
        Runtime.boot()


def test_a_misspelt_disabled_plugin_is_an_error_an_absent_one_a_warning(
    project: Path,
    write_pyproject: WritePyproject,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a typo would leave the plugin meant running: an error
    monkeypatch.setenv("DATAFN_DISABLE_PLUGINS", "websocket")
    with pytest.raises(ConfigError) as info:
        Runtime.boot()
    assert str(info.value) == (
        "DATAFN_DISABLE_PLUGINS: no installed plugin is named 'websocket'; "
        "did you mean 'websockets'?"
    )
    # a plugin this environment does not install: nothing to disable, said in the log
    monkeypatch.setenv("DATAFN_DISABLE_PLUGINS", "zzzzzz-not-here")
    with caplog.at_level("WARNING", logger="datafn.plugin"):
        Runtime.boot()
    assert "DATAFN_DISABLE_PLUGINS: no installed plugin is named 'zzzzzz-not-here'" in caplog.text
