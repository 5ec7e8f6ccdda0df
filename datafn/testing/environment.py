"""A fresh virtual environment with chosen distributions, for tests of what users install.

::

    python = create_environment(tmp / "venv", [repo_root, repo_root / "plugins" / "x", "pytest"])
    subprocess.run([python, "-m", "datafn", "plugins", "--json"], ...)

Only what is named is installed (from source folders or PyPI), so entry-point discovery sees
exactly those distributions.
"""

from __future__ import annotations

import json
import subprocess
import venv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["create_environment", "installed_plugins"]


def create_environment(
    folder: Path, requirements: Sequence[str | Path], *, timeout: float = 600
) -> Path:
    """Create a virtual environment in ``folder``, install ``requirements``; its python."""
    venv.create(folder, with_pip=True)
    python = folder / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        + [str(requirement) for requirement in requirements],
        check=True,
        timeout=timeout,
    )
    return python


def installed_plugins(python: Path, project: Path) -> dict[str, dict[str, Any]]:
    """``datafn plugins --json`` run by that environment in ``project``, by plugin name."""
    result = subprocess.run(
        [str(python.parent / "datafn"), "plugins", "--json"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"datafn plugins failed:\n{result.stderr}")
    return {plugin["name"]: plugin for plugin in json.loads(result.stdout)}
