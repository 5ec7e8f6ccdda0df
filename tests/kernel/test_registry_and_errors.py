"""Named registries and the wire error mapping."""

from __future__ import annotations

import pytest

import datafn
from datafn.errors import (
    Conflict,
    PluginError,
    ProtocolError,
    UnknownBackendError,
    ValidationFailed,
    error_from_envelope,
)
from datafn.registry import Registry, backend_name


def test_unknown_well_known_name_says_which_distribution_to_install() -> None:
    registry: Registry[type] = Registry("client store")
    registry.add("memory", dict, plugin="builtin")
    with pytest.raises(UnknownBackendError) as info:
        registry.get("sqlite")
    assert str(info.value) == (
        "no client store named 'sqlite' is installed; "
        "install the 'datafn-sqlmodel' distribution (it ships with datafn's sources: "
        "pip install ./contrib/datafn-sqlmodel from a checkout)"
    )


def test_unknown_other_name_lists_what_is_installed() -> None:
    registry: Registry[type] = Registry("transport")
    registry.add("http", dict)
    with pytest.raises(UnknownBackendError, match="installed: http"):
        registry.get("carrier-pigeon")


def test_duplicate_names_are_refused_naming_both_plugins() -> None:
    registry: Registry[type] = Registry("trigger")
    registry.add("focus", dict, plugin="a")
    with pytest.raises(PluginError, match="registered twice \\(by 'a' and 'b'\\)"):
        registry.add("focus", list, plugin="b")


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("sqlite:///app.db", "sqlite"),
        ("postgresql+psycopg://u@h/db", "postgresql"),
        ("memory://", "memory"),
        ("memory", "memory"),
    ],
)
def test_backend_name_from_url(url: str, name: str) -> None:
    assert backend_name(url) == name


def test_error_envelope_round_trip() -> None:
    error = Conflict("guard mismatch", path="if", details={"mutationId": "m1"})
    envelope = error.to_envelope()
    assert envelope == {
        "ok": False,
        "error": {
            "code": "CONFLICT",
            "message": "guard mismatch",
            "details": {"mutationId": "m1", "path": "if"},
        },
    }
    back = error_from_envelope(envelope["error"], http_status=409)
    assert isinstance(back, Conflict) and back.path == "if" and back.http_status == 409


def test_unknown_codes_and_missing_paths_stay_protocol_errors() -> None:
    back = error_from_envelope({"code": "TEAPOT", "message": "short and stout"})
    assert type(back) is ProtocolError and back.code == "TEAPOT" and back.path == "$"
    limit = error_from_envelope({"code": "LIMIT_EXCEEDED", "details": {"path": "mutations"}})
    assert isinstance(limit, ValidationFailed) and limit.code == "LIMIT_EXCEEDED"
    assert not limit.retryable and ProtocolError("x", code="INTERNAL").retryable


def test_every_exception_derives_from_datafn_error() -> None:
    exported = [getattr(datafn.errors, name) for name in datafn.errors.__all__]
    classes = [obj for obj in exported if isinstance(obj, type)]
    assert classes and all(issubclass(cls, datafn.DatafnError) for cls in classes)


@pytest.mark.parametrize(
    "module",
    [
        "datafn",
        "datafn.errors",
        "datafn.config",
        "datafn.events",
        "datafn.schema",
        "datafn.protocol",
        "datafn.registry",
        "datafn.context",
        "datafn.plugin",
        "datafn.plugin.manager",
    ],
)
def test_all_is_honest(module: str) -> None:
    import importlib
    import inspect

    mod = importlib.import_module(module)
    assert [name for name in mod.__all__ if not hasattr(mod, name)] == []
    defined_here = {
        name
        for name, value in vars(mod).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module
    }
    assert defined_here - set(mod.__all__) == set(), "public names missing from __all__"
