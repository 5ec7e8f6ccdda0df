"""Which modules a piece of code imports, seen from a fresh interpreter.

For plugin authors keeping their plugin module cheap to import (docs/plugins.md) and for
datafn's own start-up tests: :func:`modules_loaded` runs ``code`` in a new Python process and
answers which of ``modules`` it left in ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["modules_loaded"]


def modules_loaded(
    code: str,
    modules: Iterable[str],
    *,
    cwd: str | Path,
    env: Mapping[str, str] | None = None,
    args: Iterable[str] = (),
    timeout: float = 60.0,
) -> list[str]:
    """The names among ``modules`` that are imported after ``code`` ran in a fresh interpreter
    (``sys.argv[1:]`` is ``args``). ``DATAFN_*`` variables of this process are left out of its
    environment; ``env`` adds to it. Raises ``AssertionError`` with the child's stderr when
    ``code`` fails."""
    wanted = list(modules)
    report = (
        "\nimport json as _j, sys as _s\n"
        f"print(_j.dumps([m for m in {wanted!r} if m in _s.modules]))"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DATAFN_")}
    environment.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", code + report, *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded
