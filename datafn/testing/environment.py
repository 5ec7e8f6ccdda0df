"""A fresh virtual environment with chosen distributions, for tests of what users install.

::

    python = create_environment(tmp / "venv", [repo_root, repo_root / "plugins" / "x", "pytest"])
    subprocess.run([python, "-m", "datafn", "plugins", "--json"], ...)

Only what is named is installed (from source folders or PyPI), so entry-point discovery sees
exactly those distributions.
"""

from __future__ import annotations

import subprocess
import venv
from collections.abc import Sequence
from pathlib import Path

__all__ = ["create_environment"]


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
