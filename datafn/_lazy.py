"""Public names imported on first use (PEP 562), for ``datafn`` and ``datafn.client``.

Kept free of imports beyond :mod:`importlib`, so that ``import datafn`` stays cheap.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, MutableMapping, Sequence
    from typing import Any


def lazy_exports(
    namespace: MutableMapping[str, Any], exports: Mapping[str, str], public: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose globals are ``namespace``:
    ``exports`` maps a public name to the module it is imported from on first use (then kept
    in ``namespace``); any other name is tried as a submodule (``datafn.errors``), as it was
    reachable before the names were lazy."""
    package = str(namespace["__name__"])

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *public})

    return __getattr__, __dir__
