"""``import datafn`` is cheap: the public names are imported from their modules on first use.

Start-up time itself is measured by bench/bench_startup.py; these tests check the behaviour
that keeps it low (which modules an import loads), in fresh interpreters.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import datafn
from datafn.testing.imports import modules_loaded

#: Heavy libraries no ``import datafn`` needs.
DEFERRED = ("pydantic", "anyio", "pluggy", "httpx", "sqlalchemy", "rich", "click", "ssl")


def loaded_after(code: str, cwd: Path) -> list[str]:
    """The modules among DEFERRED that a fresh interpreter has loaded after running ``code``."""
    return modules_loaded(code, DEFERRED, cwd=cwd)


def test_import_datafn_loads_none_of_the_heavy_libraries(tmp_path: Path) -> None:
    assert loaded_after("import datafn", tmp_path) == []


def test_an_error_class_loads_none_of_them_either(tmp_path: Path) -> None:
    assert loaded_after("from datafn import ConfigError, ValidationFailed", tmp_path) == []


def test_the_probe_sees_what_a_public_name_imports(tmp_path: Path) -> None:
    # the client needs pydantic (configuration) and anyio: they are loaded on first use
    loaded = loaded_after("import datafn\ndatafn.Client", tmp_path)
    assert {"pydantic", "anyio"} <= set(loaded)


def test_every_public_name_has_its_module() -> None:
    assert set(datafn._EXPORTS) == set(datafn.__all__) - {"__version__"}


@pytest.mark.parametrize("name", datafn.__all__)
def test_every_public_name_resolves_to_the_object_of_its_module(name: str) -> None:
    value = getattr(datafn, name)
    module = datafn._EXPORTS.get(name)
    if module is not None:
        assert value is getattr(sys.modules[module], name)
    assert name in dir(datafn)


def test_star_import_gives_every_public_name() -> None:
    namespace: dict[str, object] = {}
    exec("from datafn import *", namespace)
    assert set(datafn.__all__) <= set(namespace)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Clinet'"):
        datafn.Clinet  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(datafn, "Clinet")


def test_submodules_stay_reachable_as_attributes() -> None:
    # plugins written as ``datafn.errors.Conflict`` or ``datafn.client.store.ClientStore``
    code = (
        "import datafn, datafn.client\n"
        "assert datafn.errors.DatafnError.__name__ == 'DatafnError'\n"
        "assert datafn.client.store.ClientStore.__name__ == 'ClientStore'\n"
        "assert datafn.schema.Schema.__name__ == 'Schema'\n"
        "try:\n"
        "    datafn.client.no_such_module\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
