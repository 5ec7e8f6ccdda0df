"""The datafn command line: plugins, config, plugin-added commands, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from datafn.cli import cli

WritePyproject = Callable[[Path, str], Path]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datafn", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_plugins_lists_builtins_and_installed_plugins_with_their_hooks(project: Path) -> None:
    result = run("plugins", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["eventlog"]["builtin"] is True
    assert plugins["eventlog"]["hooks"] == ["datafn_on_event"]
    assert plugins["template"]["distribution"] == "datafn-plugin-template"
    table = run("plugins", cwd=project)
    assert "eventlog" in table.stdout and "datafn_on_event" in table.stdout


def test_config_shows_values_and_their_sources(
    project: Path, write_pyproject: WritePyproject
) -> None:
    write_pyproject(project, "[tool.datafn.sync]\npush-batch-size = 42\n")
    result = run("config", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    rows = {row["key"]: row for row in json.loads(result.stdout)}
    assert rows["sync.push-batch-size"] == {
        "key": "sync.push-batch-size",
        "value": 42,
        "source": "pyproject.toml",
    }
    assert rows["sync.pull-batch-size"]["source"] == "default"


def test_config_never_prints_a_secret(project: Path, write_pyproject: WritePyproject) -> None:
    secrets = ["tok-AAAA1111", "tok-BBBB2222", "hdr-CCCC3333", "pw-DDDD4444", "key-EEEE5555"]
    write_pyproject(
        project,
        "[tool.datafn.server]\n"
        'database = "postgresql+psycopg://app:pw-DDDD4444@db.example/app"\n'
        "[tool.datafn.server.tokens]\n"
        '"tok-AAAA1111" = "alice"\n'
        "[tool.datafn.http]\n"
        'token = "tok-BBBB2222"\n'
        'headers = { Authorization = "Basic hdr-CCCC3333", X-Api-Key = "key-EEEE5555", '
        'X-Trace = "visible" }\n',
    )
    as_json = run("config", "--json", cwd=project)
    table = run("config", cwd=project)
    for result in (as_json, table):
        assert result.returncode == 0, result.stderr
        for secret in secrets:
            assert secret not in result.stdout + result.stderr
    rows = {row["key"]: row["value"] for row in json.loads(as_json.stdout)}
    assert rows["server.tokens"] == {"*** (sha256:" + _sha("tok-AAAA1111") + ")": "alice"}
    assert rows["http.token"] == "*** (sha256:" + _sha("tok-BBBB2222") + ")"
    assert rows["http.headers"]["X-Trace"] == "visible"
    assert rows["server.database"] == "postgresql+psycopg://app:***@db.example/app"
    assert "alice" in table.stdout and "sha256:" in table.stdout


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:8]


def test_bad_configuration_is_one_line_without_traceback(
    project: Path, write_pyproject: WritePyproject
) -> None:
    write_pyproject(project, '[tool.datafn.sync]\npush-batch-size = "ten"\n')
    result = run("config", cwd=project)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        'Error: tool.datafn.sync.push-batch-size: expected an integer ≥ 1 and ≤ 500, got "ten"'
    )
    assert "Traceback" not in result.stderr


def test_plugins_can_add_commands(project: Path) -> None:
    from datafn import Runtime, hookimpl

    class Hello:
        @hookimpl
        def datafn_add_commands(self, cli: click.Group) -> None:
            @cli.command(name="hello")
            def hello() -> None:
                click.echo("hello from a plugin")

    group = click.Group(commands=dict(cli.commands))
    Runtime.boot(plugins=[Hello()]).plugins.hook.datafn_add_commands(cli=group)
    result = CliRunner().invoke(group, ["hello"])
    assert result.exit_code == 0 and result.output == "hello from a plugin\n"


def test_help_works_with_a_broken_configuration(
    project: Path, write_pyproject: WritePyproject
) -> None:
    write_pyproject(project, "[tool.datafn]\nunknown-key = 1\n")
    result = run("--help", cwd=project)
    assert result.returncode == 0
    assert "plugins" in result.stdout and "config" in result.stdout


@pytest.mark.parametrize("args", [["nope"], ["plugins", "--bad-flag"]])
def test_usage_errors_exit_2(project: Path, args: list[str]) -> None:
    assert run(*args, cwd=project).returncode == 2


def test_plugins_still_lists_plugins_when_a_plugin_setting_is_invalid(
    project: Path, write_pyproject: WritePyproject
) -> None:
    write_pyproject(project, '[tool.datafn.template]\ndeny-phases = "seed"\n')
    result = run("plugins", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "template" in {p["name"] for p in json.loads(result.stdout)}
    assert "tool.datafn.template.deny-phases: expected a list of strings" in result.stderr
    table = run("plugins", cwd=project)
    assert table.returncode == 0 and "template" in table.stdout
    assert "tool.datafn.template.deny-phases" in table.stderr
    # the commands plugins add are still there, and report the error when run
    serve = run("serve", cwd=project)
    assert serve.returncode == 1
    assert serve.stderr.startswith("Error: tool.datafn.template.deny-phases: expected")


def test_config_shows_absolute_locations_and_the_schema(
    project: Path, write_pyproject: WritePyproject
) -> None:
    app = project / "app"
    app.mkdir()
    write_pyproject(
        app,
        '[tool.datafn]\nschema = "schema.json"\nstore = "sqlite:///notes.db"\n'
        '[tool.datafn.server]\ndatabase = "sqlite:///notes-server.db"\n',
    )
    schema = {"resources": [{"name": "notes", "fields": [{"name": "text", "type": "string"}]}]}
    (app / "schema.json").write_text(json.dumps(schema))
    result = run("--config", "app/pyproject.toml", "config", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    rows = {row["key"]: (row["value"], row["source"]) for row in json.loads(result.stdout)}
    assert rows["schema"] == (str(app / "schema.json"), "pyproject.toml")
    assert rows["store"] == (f"sqlite:///{app}/notes.db", "pyproject.toml")
    assert rows["server.database"] == (f"sqlite:///{app}/notes-server.db", "pyproject.toml")
    table = run("--config", "app/pyproject.toml", "config", cwd=project)
    assert "schema" in table.stdout and str(app / "pyproject.toml") in table.stdout


def test_invalid_toml_is_reported_with_file_line_and_column(
    project: Path, write_pyproject: WritePyproject
) -> None:
    write_pyproject(project, "[tool.datafn.sync]\npush-batch-size = 10\n")
    app = project / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text("[tool.datafn]\nhook-timeout 5\n")
    result = run("config", cwd=app)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: {app / 'pyproject.toml'}:2:14: invalid TOML at line 2, column 14: "
        "Expected '=' after a key in a key/value pair"
    )
