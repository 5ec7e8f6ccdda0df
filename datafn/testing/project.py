"""A throwaway project folder with a ``[tool.datafn]`` configuration, for plugin tests.

::

    project = DatafnProject(tmp_path)
    project.write(
        '[tool.datafn.guard]\\nmax-batch-size = 10\\n',
        schema={"resources": [{"name": "todos", "fields": [...]}]},
        settings={"store": "memory://"},
    )
    runtime = project.boot()
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datafn.runtime import Runtime

__all__ = ["DatafnProject", "toml_value"]


def toml_value(value: Any) -> str:
    """A Python value as a TOML value (strings, numbers, booleans, lists and inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML has no value for {value!r} here")
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, Mapping):
        items = ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write a {type(value).__name__} as TOML")


class DatafnProject:
    """A project folder: ``pyproject.toml`` with ``[tool.datafn]``, and an optional schema."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pyproject = path / "pyproject.toml"

    def __repr__(self) -> str:
        return f"<DatafnProject {self.path}>"

    def write(
        self,
        text: str = "",
        *,
        schema: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
        name: str = "app",
    ) -> Path:
        """(Re)write ``pyproject.toml`` and return its path.

        :param text: TOML appended as it is, typically plugin tables
            (``[tool.datafn.guard]`` …); it must not repeat the ``[tool.datafn]`` header.
        :param schema: written to ``schema.json`` beside it and named by ``schema =``.
        :param settings: top-level ``[tool.datafn]`` keys (kebab-case, as in TOML).
        """
        top: dict[str, Any] = dict(settings or {})
        if schema is not None:
            (self.path / "schema.json").write_text(json.dumps(schema, indent=2), encoding="utf-8")
            top.setdefault("schema", "schema.json")
        lines = ["[project]", f"name = {toml_value(name)}", "", "[tool.datafn]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in top.items()]
        body = "\n".join(lines) + "\n\n" + text.strip() + "\n"
        self.pyproject.write_text(body, encoding="utf-8")
        return self.pyproject

    def boot(self, *, plugins: list[object] | None = None, **overrides: Any) -> Runtime:
        """Boot a runtime from this project's pyproject.toml (environment variables ignored)."""
        if not self.pyproject.exists():
            self.write()
        return Runtime.boot(
            plugins=plugins or (), pyproject=self.pyproject, use_env=False, **overrides
        )
