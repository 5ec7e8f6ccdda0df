"""A fresh virtual environment with datafn and a plugin distribution installed from source."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from datafn.testing.environment import create_environment, installed_plugins

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fresh-venv")
    create_environment(
        folder,
        [ROOT, ROOT / "plugins" / "datafn-plugin-template", "pytest>=8", "pytest-asyncio>=0.24"],
    )
    return folder


@pytest.mark.slow
def test_datafn_plugins_in_a_fresh_environment_lists_builtins_and_their_hooks(
    fresh_env: Path, tmp_path: Path
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "app"\n\n[tool.datafn.template]\ndeny-phases = ["seed"]\n'
    )
    plugins = installed_plugins(fresh_env / "bin" / "python", tmp_path)
    builtins = {name for name, p in plugins.items() if p["builtin"]}
    assert "eventlog" in builtins
    assert all(plugins[name]["hooks"] for name in builtins)
    assert plugins["template"]["distribution"] == "datafn-plugin-template"
    # only what was installed into this environment is found
    assert "sqlmodel-server" not in plugins


@pytest.mark.slow
def test_template_tests_pass_when_installed_alone(fresh_env: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "my-plugin"
    shutil.copytree(ROOT / "plugins" / "datafn-plugin-template", copy)
    python = fresh_env / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
