"""Where configuration comes from: relative paths, broken files, the environment for every
section, the remote URL."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from datafn import ConfigError, Runtime, load_config
from datafn.config import store_location

WritePyproject = Callable[[Path, str], Path]


# -- relative paths ----------------------------------------------------------------------------


def test_relative_paths_in_pyproject_resolve_next_to_it_not_the_working_directory(
    project: Path, write_pyproject: WritePyproject, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = project / "app"
    app.mkdir()
    write_pyproject(
        app,
        '[tool.datafn]\nschema = "schema.json"\nstore = "sqlite:///data/local.db"\n'
        '[tool.datafn.sync]\nseed-file = "seed.json"\n'
        '[tool.datafn.server]\ndatabase = "sqlite:///notes-server.db?timeout=5"\n',
    )
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(pyproject=Path("../app/pyproject.toml"))
    assert config.pyproject == app / "pyproject.toml"
    assert config.schema_source == str(app / "schema.json")
    assert config.settings.store == f"sqlite:///{app}/data/local.db"
    assert config.sync.seed_file == str(app / "seed.json")
    assert config.server.database == f"sqlite:///{app}/notes-server.db?timeout=5"
    assert store_location(config.server.database) == f"SQLite file {app}/notes-server.db"


def test_defaults_resolve_next_to_the_pyproject_found_from_a_subfolder(
    project: Path, write_pyproject: WritePyproject, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_pyproject(project, '[tool.datafn]\nschema = "schema.json"\n')
    sub = project / "scripts"
    sub.mkdir()
    monkeypatch.chdir(sub)  # `python ../todo.py` from a subfolder: the same store as from the top
    config = load_config()
    assert config.settings.store == f"sqlite:///{project}/datafn-local.db"
    assert config.server.database == f"sqlite:///{project}/datafn.db"


def test_environment_and_arguments_resolve_against_the_working_directory(
    project: Path, write_pyproject: WritePyproject, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = project / "app"
    app.mkdir()
    write_pyproject(app, '[tool.datafn]\nstore = "sqlite:///app.db"\n')
    monkeypatch.setenv("DATAFN_SCHEMA", "env-schema.json")
    monkeypatch.setenv("DATAFN_SERVER__DATABASE", "sqlite:///env.db")
    config = load_config(
        pyproject=app / "pyproject.toml", store="sqlite:///arg.db", sync={"seed_file": "s.json"}
    )
    assert config.schema_source == str(project / "env-schema.json")
    assert config.server.database == f"sqlite:///{project}/env.db"
    assert config.settings.store == f"sqlite:///{project}/arg.db"
    assert config.sync.seed_file == str(project / "s.json")


@pytest.mark.parametrize(
    "url",
    [
        "memory://",
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:////srv/app/app.db",
        "postgresql+psycopg://app:pw@db/app",
        "postgresql:///app",  # a database name, not a file
    ],
)
def test_urls_without_a_relative_file_are_kept(
    project: Path, write_pyproject: WritePyproject, url: str
) -> None:
    write_pyproject(project, f'[tool.datafn]\nstore = "{url}"\n')
    assert load_config().settings.store == url


def test_plugin_path_settings_resolve_next_to_the_pyproject(
    project: Path, write_pyproject: WritePyproject, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = project / "app"
    app.mkdir()
    write_pyproject(app, '[tool.datafn.audit]\nsink = "file"\npath = "logs/audit.jsonl"\n')
    runtime = Runtime.boot(pyproject=app / "pyproject.toml", use_env=False)
    assert runtime.config.section("audit").path == str(app / "logs" / "audit.jsonl")
    monkeypatch.setenv("DATAFN_AUDIT__PATH", "mine.jsonl")
    runtime = Runtime.boot(pyproject=app / "pyproject.toml")
    assert runtime.config.section("audit").path == str(project / "mine.jsonl")


# -- broken files -------------------------------------------------------------------------------


def test_a_pyproject_with_a_syntax_error_is_an_error_not_skipped(
    project: Path, write_pyproject: WritePyproject, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_pyproject(project, '[tool.datafn]\nstore = "sqlite:///parent.db"\n')
    app = project / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text('[tool.datafn]\nstore = "memory://"\nschema = \n')
    monkeypatch.chdir(app)
    with pytest.raises(ConfigError) as info:
        load_config()
    message = str(info.value)
    assert message.startswith(f"{app / 'pyproject.toml'}:3:10: invalid TOML at line 3, column 10")
    assert "parent" not in message


def test_an_explicit_file_with_a_syntax_error_names_line_and_column(
    project: Path, write_pyproject: WritePyproject
) -> None:
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n[tool.datafn\n")
    with pytest.raises(ConfigError, match=r"pyproject\.toml:3:13: invalid TOML at line 3"):
        load_config(pyproject=project / "pyproject.toml")
    (project / "pyproject.toml").write_text("[tool.datafn]\nstore = 'memory://")
    with pytest.raises(ConfigError) as info:  # tomllib says only "at end of document"
        load_config(pyproject=project / "pyproject.toml")
    assert str(info.value) == (
        f'{project / "pyproject.toml"}:2:19: invalid TOML at line 2, column 19: Expected "\'"'
    )


# -- the environment reaches every section ------------------------------------------------------


def test_plugin_sections_are_read_from_the_environment(
    project: Path, write_pyproject: WritePyproject, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_pyproject(
        project,
        '[tool.datafn.http]\ntoken = "from-file"\n[tool.datafn.audit]\nbacklog = 5\n',
    )
    monkeypatch.setenv("DATAFN_HTTP__TOKEN", "from-env")
    monkeypatch.setenv("DATAFN_HTTP__HEADERS", '{"X-Trace": "1"}')
    monkeypatch.setenv("DATAFN_AUDIT__SIDES", "client")
    monkeypatch.setenv("DATAFN_SYNC__TRIGGERS", "interval,online")
    runtime = Runtime.boot()
    config = runtime.config
    assert config.section("http").token == "from-env"
    assert config.section("http").headers == {"X-Trace": "1"}
    assert config.section("audit").sides == ["client"]
    assert config.section("audit").backlog == 5
    assert config.sync.triggers == ["interval", "online"]
    assert config.source_of("http.token") == "env DATAFN_HTTP__TOKEN"
    assert config.source_of("audit.backlog") == "pyproject.toml"
    rows = {key: source for key, _value, source in config.effective()}
    assert rows["http.token"] == "env DATAFN_HTTP__TOKEN"
    # keyword arguments still win over the environment
    runtime = Runtime.boot(http={"token": "from-argument"})
    assert runtime.config.section("http").token == "from-argument"


def test_environment_errors_in_plugin_sections_name_the_variable(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAFN_HTTP__MAX_RESPONSE_BYTES", "small")
    with pytest.raises(ConfigError) as info:
        Runtime.boot()
    assert str(info.value).startswith("DATAFN_HTTP__MAX_RESPONSE_BYTES: expected an integer")
    monkeypatch.delenv("DATAFN_HTTP__MAX_RESPONSE_BYTES")
    monkeypatch.setenv("DATAFN_HTTP__TOKNE", "x")
    with pytest.raises(ConfigError) as info:
        Runtime.boot()
    assert str(info.value) == "DATAFN_HTTP__TOKNE: unknown setting; did you mean 'token'?"


def test_a_variable_for_no_installed_section_is_logged(
    project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DATAFN_GAURD__MAX_BATCH_SIZE", "3")
    monkeypatch.setenv("DATAFN_TEST_SOMETHING", "not datafn's: no warning")
    with caplog.at_level(logging.WARNING, logger="datafn.config"):
        Runtime.boot()
    assert "DATAFN_GAURD__MAX_BATCH_SIZE: no installed plugin reads this variable" in caplog.text
    assert "DATAFN_TEST_SOMETHING" not in caplog.text


def test_use_env_false_ignores_plugin_variables_too(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAFN_HTTP__TOKEN", "from-env")
    assert Runtime.boot(use_env=False).config.section("http").token is None


# -- the remote URL -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remote", "problem"),
    [
        ("localhost:8790/datafn", 'did you mean "http://localhost:8790/datafn"?'),
        ("ftp://host/datafn", "the scheme must be http:// or https://"),
        ("http:///datafn", "there is no host"),
        ("http://host:port/datafn", "Port could not be cast"),
    ],
)
def test_the_remote_is_checked_when_configuration_loads(
    project: Path, write_pyproject: WritePyproject, remote: str, problem: str
) -> None:
    write_pyproject(project, f'[tool.datafn.sync]\nremote = "{remote}"\n')
    with pytest.raises(ConfigError) as info:
        load_config()
    message = str(info.value)
    assert message.startswith(
        "tool.datafn.sync.remote: expected an http:// or https:// URL with a host"
    )
    assert problem in message


def test_a_remote_argument_is_checked_too(project: Path) -> None:
    with pytest.raises(ConfigError, match=r"^sync\.remote: expected an http://"):
        load_config(sync={"remote": "localhost:8790/datafn"})
    assert load_config(sync={"remote": "https://sync.example/datafn"}).sync.remote


# -- schema in the effective settings --------------------------------------------------------


def test_effective_settings_list_the_schema_and_its_source(
    project: Path, write_pyproject: WritePyproject
) -> None:
    assert ("schema", None, "default") in list(load_config().effective())
    write_pyproject(project, '[tool.datafn]\nschema = "schema.json"\n')
    rows = {key: (value, source) for key, value, source in load_config().effective()}
    assert rows["schema"] == (str(project / "schema.json"), "pyproject.toml")
    write_pyproject(
        project,
        "[tool.datafn.schema]\n"
        'resources = [{ name = "todos", fields = [{ name = "title", type = "string" }] }]\n',
    )
    rows = {key: (value, source) for key, value, source in load_config().effective()}
    assert rows["schema"] == ("[tool.datafn.schema] table: todos", "pyproject.toml")
