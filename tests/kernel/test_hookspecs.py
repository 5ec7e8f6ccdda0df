"""Every hook specification is documented and exercised by a test of the path that calls it.

``EXERCISES`` maps each ``datafn_*`` specification to a test that drives the kernel path calling
it with a recording plugin; the coverage test fails when a specification has no exercise.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from datafn import Event, EventBus, Identity, RequestContext, Runtime, SyncContext, hookimpl
from datafn.plugin import spec
from datafn.plugin.manager import ASYNC_HOOKS, REGISTRY_HOOKS, PluginManager

SPECS = sorted(
    name for name, fn in vars(spec).items() if name.startswith("datafn_") and callable(fn)
)


@pytest.mark.parametrize("name", SPECS)
def test_every_spec_is_documented(name: str) -> None:
    raw = inspect.getdoc(getattr(spec, name)) or ""
    summary = raw.split("\n\n")[0]
    doc = " ".join(raw.split())
    assert summary.endswith((".", ")")), f"{name}: first line must be a one-line summary"
    assert "Failure policy:" in doc, f"{name}: say whether it is fail-closed or fail-open"
    assert "Called " in doc, f"{name}: say when it is called"
    for arg in inspect.signature(getattr(spec, name)).parameters:
        assert f":param {arg}:" in doc, f"{name}: document the {arg!r} parameter"
    assert ":return:" in doc or "Return value:" in doc, f"{name}: document the return value"


def test_async_hooks_name_existing_specs() -> None:
    assert set(ASYNC_HOOKS) <= set(SPECS)
    assert set(REGISTRY_HOOKS.values()) <= set(SPECS)


class Recorder:
    """Implements every hook; records each call with its arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def called(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for hook, kwargs in self.calls if hook == name]


def make_recorder() -> Recorder:
    recorder = Recorder()
    for name in SPECS:
        params = ", ".join(inspect.signature(getattr(spec, name)).parameters)
        namespace: dict[str, Any] = {"record": recorder.calls.append}
        # a real function with the spec's argument names, as a plugin author would write it
        exec(f"def {name}({params}):\n    record(({name!r}, dict(locals())))\n", namespace)
        setattr(recorder, name, hookimpl(namespace[name]))
    return recorder


async def _registry(kind: str, hook: str, recorder: Recorder, pm: PluginManager) -> None:
    registry = pm.registry(kind)
    assert recorder.called(hook) == [{"registry": registry}]
    assert pm.registry(kind) is registry  # filled once


async def _settings(recorder: Recorder, runtime: Runtime) -> None:
    (call,) = recorder.called("datafn_add_settings")
    assert hasattr(call["settings"], "add")


async def _configure(recorder: Recorder, runtime: Runtime) -> None:
    assert recorder.called("datafn_configure") == [{"config": runtime.config}]


async def _commands(recorder: Recorder, runtime: Runtime) -> None:
    group = click.Group("datafn")
    runtime.plugins.hook.datafn_add_commands(cli=group)
    assert recorder.called("datafn_add_commands") == [{"cli": group}]


async def _server_routes(recorder: Recorder, runtime: Runtime) -> None:
    from datafn.server import DatafnServer

    schema = {"resources": [{"name": "todos", "fields": []}]}
    server = DatafnServer(runtime, schema=schema, store="memory://")
    (call,) = recorder.called("datafn_add_server_routes")
    assert call["server"] is server
    assert isinstance(call["routes"], list)


async def _phase(name: str, kwargs: dict[str, Any], recorder: Recorder, pm: PluginManager) -> None:
    assert await pm.caller.call(name, **kwargs) is None
    assert recorder.called(name) == [kwargs]


async def _before(recorder: Recorder, pm: PluginManager) -> None:
    context = SyncContext(side="client")
    assert await pm.caller.before_sync("pull", {"cursors": {}}, context) == {"cursors": {}}
    assert recorder.called("datafn_before_sync") == [
        {"phase": "pull", "payload": {"cursors": {}}, "context": context}
    ]


async def _after(recorder: Recorder, pm: PluginManager) -> None:
    context = SyncContext(side="server", namespace="datafn")
    await pm.caller.after_sync("push", {}, {"ok": True}, context)
    assert recorder.called("datafn_after_sync")[0]["result"] == {"ok": True}


async def _event(recorder: Recorder, pm: PluginManager) -> None:
    bus = EventBus(hooks=pm.caller)
    event = await bus.emit("sync_started", phase="clone")
    assert recorder.called("datafn_on_event") == [{"event": event}]
    assert isinstance(event, Event)


def _server_hook(name: str, kwargs: dict[str, Any]) -> Callable[..., Awaitable[None]]:
    async def run(recorder: Recorder, pm: PluginManager) -> None:
        await pm.caller.call(name, **kwargs)
        assert recorder.called(name) == [kwargs]

    return run


async def _resolve_conflict(recorder: Recorder, runtime: Runtime) -> None:
    from datafn.server import DatafnServer
    from datafn.server.store import PendingMutation

    schema = {"resources": [{"name": "todos", "fields": [{"name": "title", "type": "string"}]}]}
    server = DatafnServer(runtime, schema=schema, store="memory://")

    def merge(mid: str, title: str, base: int | None) -> PendingMutation:
        return PendingMutation(
            mid, "todos", "merge", "t1", {"id": "t1", "title": title}, None, None, base
        )

    await server.store.apply_push("ns", "a", [merge("m1", "one", None)])
    await server.store.apply_push("ns", "b", [merge("m2", "two", 1)])
    outcome = await server.store.apply_push("ns", "a", [merge("m3", "three", 1)])
    assert recorder.called("datafn_resolve_conflict") == [
        {
            "resource": "todos",
            "record_id": "t1",
            "operation": "merge",
            "fields": ["title"],
            "current": {"id": "t1", "title": "two"},
            "incoming": {"id": "t1", "title": "three"},
            "base_seq": 1,
            "client_id": "a",
            "other_client_id": "b",
        }
    ]
    # it answered None: the policy (last writer wins) applied the write
    assert outcome.results == [None] and outcome.conflicts[0]["resolution"] == "last-writer-wins"


_CTX = RequestContext(action="push", identity=Identity("alice"), namespace="user:alice")

EXERCISES: dict[str, Callable[..., Awaitable[None]]] = {
    "datafn_add_settings": _settings,
    "datafn_configure": _configure,
    "datafn_add_commands": _commands,
    "datafn_add_server_routes": _server_routes,
    **{
        hook: (lambda r, pm, _k=kind, _h=hook: _registry(_k, _h, r, pm))
        for kind, hook in REGISTRY_HOOKS.items()
    },
    "datafn_sync_seed": lambda r, pm: _phase("datafn_sync_seed", {"engine": 1, "data": {}}, r, pm),
    **{
        f"datafn_sync_{phase}": (
            lambda r, pm, _p=phase: _phase(
                f"datafn_sync_{_p}", {"engine": 1, "resources": ["todos"]}, r, pm
            )
        )
        for phase in ("clone", "pull", "clone_up", "reconcile")
    },
    "datafn_sync_push": lambda r, pm: _phase("datafn_sync_push", {"engine": 1}, r, pm),
    "datafn_sync_loop": lambda r, pm: _phase("datafn_sync_loop", {"engine": 1}, r, pm),
    "datafn_before_sync": _before,
    "datafn_after_sync": _after,
    "datafn_on_event": _event,
    "datafn_authenticate": _server_hook(
        "datafn_authenticate", {"headers": {"authorization": "Bearer t"}, "action": "pull"}
    ),
    "datafn_authorize": _server_hook(
        "datafn_authorize", {"context": _CTX, "action": "push", "payload": {}}
    ),
    "datafn_resolve_conflict": _resolve_conflict,
    "datafn_resolve_namespace": _server_hook(
        "datafn_resolve_namespace", {"identity": Identity("alice"), "headers": {}}
    ),
}


def test_every_spec_has_an_exercise() -> None:
    assert sorted(EXERCISES) == SPECS


@pytest.mark.parametrize("name", SPECS)
async def test_hook_is_called_by_its_kernel_path(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    recorder = make_recorder()
    # the built-in phases need a real engine; here the recorder stands in for them
    runtime = Runtime.boot(plugins=[recorder], use_env=False, disable_plugins=["client-phases"])
    exercise = EXERCISES[name]
    wants_runtime = "runtime" in inspect.signature(exercise).parameters
    await exercise(recorder, runtime if wants_runtime else runtime.plugins)


def test_plugins_command_lists_hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datafn.cli import cli

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    assert '"datafn_on_event"' in result.output
