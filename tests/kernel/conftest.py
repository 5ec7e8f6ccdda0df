from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A throwaway project folder as the working directory, with no DATAFN_* variables set."""
    import os

    for name in list(os.environ):
        if name.startswith("DATAFN_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def _write_pyproject(folder: Path, body: str) -> Path:
    path = folder / "pyproject.toml"
    path.write_text('[project]\nname = "app"\n\n' + body, encoding="utf-8")
    return path


@pytest.fixture
def write_pyproject() -> Callable[[Path, str], Path]:
    """``write_pyproject(folder, toml_body)`` writes a pyproject.toml and returns its path."""
    return _write_pyproject
