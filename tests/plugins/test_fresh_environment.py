"""datafn with the guard, audit and template distributions in a fresh virtual environment.

One environment for the module: datafn, datafn-guard, datafn-audit and
datafn-plugin-template installed from source (no editable installs, nothing else of this
repository), plus pytest. The end-to-end tests run inside it against the installed packages,
with the datafn.testing fixtures enabled the way a plugin author enables them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from datafn.testing.environment import create_environment, installed_plugins

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_environment(
        tmp_path_factory.mktemp("plugins-venv"),
        [
            ROOT,
            ROOT / "contrib" / "datafn-guard",
            ROOT / "contrib" / "datafn-audit",
            ROOT / "plugins" / "datafn-plugin-template",
            "pytest>=8",
            "pytest-asyncio>=0.24",
        ],
    )


@pytest.mark.slow
def test_distributions_are_found_and_fail_closed_and_fail_open_in_a_fresh_environment(
    fresh_python: Path, tmp_path: Path
) -> None:
    shutil.copy(HERE / "test_end_to_end.py", tmp_path / "test_end_to_end.py")
    result = subprocess.run(
        [
            str(fresh_python),
            "-m",
            "pytest",
            "-q",
            "-p",
            "datafn.testing.pytest_plugin",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            "-W",
            "error",
            "test_end_to_end.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


@pytest.mark.slow
def test_only_the_installed_distributions_are_loaded(fresh_python: Path, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "app"\n\n[tool.datafn]\n')
    names = installed_plugins(fresh_python, tmp_path)
    assert {"guard", "audit", "template"} <= set(names)
    assert "stamp" not in names and "redact" not in names and "sqlmodel-server" not in names
