"""Configuration: defaults, precedence, key paths in errors, provenance."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from datafn import ConfigError, load_config


def test_defaults_match_the_documented_ones(
    write_pyproject: Callable[[Path, str], Path], project: Path
) -> None:
    sync = load_config().sync
    assert (sync.push_batch_size, sync.push_max_retries) == (100, 3)
    assert (sync.pull_batch_size, sync.max_pull_iterations) == (200, 50)
    assert sync.push_interval is None
    assert sync.ws is False
    reconnect = sync.ws_reconnect
    assert (reconnect.enabled, reconnect.base_delay, reconnect.multiplier) == (True, 1.0, 2.0)
    assert (reconnect.max_delay, reconnect.jitter) == (60.0, 0.5)


def test_precedence_is_arguments_then_env_then_pyproject_then_defaults(
    write_pyproject: Callable[[Path, str], Path], project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_pyproject(
        project,
        "[tool.datafn.sync]\npush-batch-size = 10\npull-batch-size = 20\nmax-pull-iterations = 7\n",
    )
    monkeypatch.setenv("DATAFN_SYNC__PULL_BATCH_SIZE", "30")
    monkeypatch.setenv("DATAFN_SYNC__PUSH_BATCH_SIZE", "40")
    config = load_config(sync={"push_batch_size": 50})
    assert config.sync.push_batch_size == 50
    assert config.sync.pull_batch_size == 30
    assert config.sync.max_pull_iterations == 7
    assert config.sync.push_max_retries == 3
    assert config.source_of("sync.push_batch_size") == "argument"
    assert config.source_of("sync.pull_batch_size") == "env DATAFN_SYNC__PULL_BATCH_SIZE"
    assert config.source_of("sync.max_pull_iterations") == "pyproject.toml"
    assert config.source_of("sync.push_max_retries") == "default"


def test_nearest_pyproject_with_a_datafn_table_is_used(
    write_pyproject: Callable[[Path, str], Path], project: Path
) -> None:
    write_pyproject(project, '[tool.datafn]\nstore = "memory://"\n')
    nested = project / "pkg" / "sub"
    nested.mkdir(parents=True)
    write_pyproject(project / "pkg", "[tool.other]\nx = 1\n")  # no [tool.datafn]: skipped
    assert load_config(start=nested).settings.store == "memory://"


def test_nested_tables_are_kebab_case(
    write_pyproject: Callable[[Path, str], Path], project: Path
) -> None:
    write_pyproject(project, "[tool.datafn.sync.ws-reconnect]\nbase-delay = 2.5\nenabled = false\n")
    reconnect = load_config().sync.ws_reconnect
    assert reconnect.base_delay == 2.5
    assert reconnect.enabled is False


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[tool.datafn.sync]\npush-batch-size = "ten"\n',
            'tool.datafn.sync.push-batch-size: expected an integer ≥ 1 and ≤ 500, got "ten"',
        ),
        (
            "[tool.datafn.sync]\npull-batch-size = 5\n",
            "tool.datafn.sync.pull-batch-size: expected an integer ≥ 10 and ≤ 10000, got 5",
        ),
        (
            "[tool.datafn.sync.ws-reconnect]\nmax-delay = -1\n",
            "tool.datafn.sync.ws-reconnect.max-delay: expected a number > 0, got -1",
        ),
        (
            '[tool.datafn.sync]\nws = "maybe"\n',
            'tool.datafn.sync.ws: expected true or false, got "maybe"',
        ),
        (
            "[tool.datafn.sync]\npush-batch = 3\n",
            "tool.datafn.sync.push-batch: unknown setting; did you mean 'push-batch-size'?",
        ),
        (
            "[tool.datafn]\nhook-timeut = 3\n",
            "tool.datafn.hook-timeut: unknown setting; did you mean 'hook-timeout'?",
        ),
        (
            "[tool.datafn.sync]\npush-interval = 0\n",
            "tool.datafn.sync.push-interval: expected a number > 0 (or unset), got 0",
        ),
    ],
)
def test_bad_values_name_the_full_key_and_what_is_expected(
    write_pyproject: Callable[[Path, str], Path], project: Path, toml: str, message: str
) -> None:
    write_pyproject(project, toml)
    with pytest.raises(ConfigError) as info:
        load_config()
    assert str(info.value) == message


def test_env_errors_name_the_variable(
    write_pyproject: Callable[[Path, str], Path], project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAFN_SYNC__PUSH_MAX_RETRIES", "-2")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert str(info.value).startswith("DATAFN_SYNC__PUSH_MAX_RETRIES: expected an integer ≥ 0")


def test_argument_errors_name_the_argument(
    write_pyproject: Callable[[Path, str], Path], project: Path
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(sync={"push_batch_size": 0})
    assert str(info.value).startswith("sync.push_batch_size: expected an integer ≥ 1")


def test_list_settings_accept_commas_from_the_environment(
    write_pyproject: Callable[[Path, str], Path], project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAFN_DISABLE_PLUGINS", "a, b")
    assert load_config().settings.disable_plugins == ["a", "b"]


def test_explicit_config_file_from_the_environment(
    write_pyproject: Callable[[Path, str], Path], project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = project / "elsewhere.toml"
    other.write_text('[tool.datafn]\nclient-id = "c-7"\n')
    monkeypatch.setenv("DATAFN_CONFIG", str(other))
    config = load_config()
    assert config.settings.client_id == "c-7"
    assert config.pyproject == other
    monkeypatch.setenv("DATAFN_CONFIG", str(project / "missing.toml"))
    with pytest.raises(ConfigError, match="DATAFN_CONFIG: no such file"):
        load_config()


def test_invalid_toml_is_a_config_error(
    write_pyproject: Callable[[Path, str], Path], project: Path
) -> None:
    (project / "pyproject.toml").write_text("[tool.datafn\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(pyproject=project / "pyproject.toml")


def test_schema_value_is_kept_aside_with_its_source(
    write_pyproject: Callable[[Path, str], Path], project: Path
) -> None:
    write_pyproject(project, '[tool.datafn]\nschema = "schema.json"\n')
    config = load_config()
    assert config.schema_source == str(project / "schema.json")  # next to pyproject.toml
    assert config.source_of("schema") == "pyproject.toml"


def test_effective_settings_hide_tokens(
    write_pyproject: Callable[[Path, str], Path], project: Path
) -> None:
    write_pyproject(project, '[tool.datafn.server.tokens]\nsecret-token = "alice"\n')
    rows = {key: (value, source) for key, value, source in load_config().effective()}
    shown, source = rows["server.tokens"]
    assert source == "pyproject.toml"
    assert list(shown.values()) == ["alice"]  # the subject is no secret, the token is
    assert "secret-token" not in repr(rows)
    assert next(iter(shown)).startswith("*** (sha256:")
    assert rows["sync.push-batch-size"] == (100, "default")
