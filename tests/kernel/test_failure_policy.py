"""The async hook caller: awaiting, firstresult, fail-closed before-sync, fail-open after-sync."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from datafn import HookFailed, SyncContext, SyncVetoed, Veto, hookimpl
from datafn.plugin.manager import HookFailure, PluginManager

CONTEXT = SyncContext(side="client", client_id="c1", resources=("todos",))


def manager(*plugins: tuple[str, object], timeout: float = 5.0) -> PluginManager:
    pm = PluginManager(hook_timeout=timeout)
    for name, plugin in plugins:
        pm.register(plugin, name=name)
    return pm


class AddTag:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    @hookimpl
    async def datafn_before_sync(self, payload: dict[str, Any]) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        return {**payload, "tags": [*payload.get("tags", []), self.tag]}


class Observe:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    @hookimpl
    def datafn_before_sync(self, phase: str, payload: Any) -> None:
        self.seen.append((phase, payload))


async def test_before_sync_chains_replacement_payloads_in_order() -> None:
    observer = Observe()
    first, second = AddTag("a"), AddTag("b")
    # pluggy calls later registrations first; tryfirst/trylast order the rest
    pm = manager(("observer", observer), ("second", second), ("first", first))
    payload = await pm.caller.before_sync("push", {"mutations": []}, CONTEXT)
    assert payload == {"mutations": [], "tags": ["a", "b"]}
    assert observer.seen == [("push", {"mutations": [], "tags": ["a", "b"]})]


@pytest.mark.parametrize("how", ["raise", "return", "error"])
async def test_before_sync_is_fail_closed_and_names_the_plugin(how: str) -> None:
    after: list[str] = []

    class Gate:
        @hookimpl(tryfirst=True)
        async def datafn_before_sync(self, phase: str) -> Veto | None:
            if how == "raise":
                raise Veto("no pushes today", code="FORBIDDEN", path="mutations")
            if how == "return":
                return Veto("no pushes today", code="FORBIDDEN", path="mutations")
            raise RuntimeError("policy store unreachable")

    class Later:
        @hookimpl
        def datafn_before_sync(self, phase: str) -> None:
            after.append(phase)

    pm = manager(("later", Later()), ("gate", Gate()))
    with pytest.raises(SyncVetoed) as info:
        await pm.caller.before_sync("push", {"mutations": []}, CONTEXT)
    error = info.value
    assert error.plugin == "gate" and error.phase == "push"
    assert "'gate'" in str(error) and "push" in str(error)
    assert after == [], "no implementation after the veto may run"
    if how == "error":
        assert error.veto is None and isinstance(error.cause, RuntimeError)
        assert "policy store unreachable" in str(error)
    else:
        assert error.veto is not None and error.veto.path == "mutations"
        assert "no pushes today" in str(error)


async def test_hung_before_sync_is_bounded_by_the_timeout() -> None:
    class Hangs:
        @hookimpl
        async def datafn_before_sync(self) -> None:
            await anyio.sleep_forever()

    pm = manager(("hangs", Hangs()), timeout=0.05)
    with pytest.raises(SyncVetoed, match=r"timed out after 0\.05 s") as info:
        await pm.caller.before_sync("pull", {}, CONTEXT)
    assert info.value.plugin == "hangs"


async def test_after_sync_is_fail_open_and_reports_each_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    results: list[Any] = []

    class Broken:
        @hookimpl(tryfirst=True)
        def datafn_after_sync(self) -> None:
            raise ValueError("sink is full")

    class Hangs:
        @hookimpl(tryfirst=True)
        async def datafn_after_sync(self) -> None:
            await anyio.sleep_forever()

    class Healthy:
        @hookimpl
        async def datafn_after_sync(self, phase: str, result: Any) -> None:
            results.append((phase, result))

    failures: list[HookFailure] = []
    pm = manager(("healthy", Healthy()), ("hangs", Hangs()), ("broken", Broken()), timeout=0.05)
    with caplog.at_level(logging.WARNING, logger="datafn.plugin"):
        await pm.caller.after_sync("pull", {}, {"records": {}}, CONTEXT, on_failure=failures.append)
    assert results == [("pull", {"records": {}})]
    assert sorted(f.plugin for f in failures) == ["broken", "hangs"]
    assert {f.hook for f in failures} == {"datafn_after_sync"}
    logged = caplog.text
    assert "'broken'" in logged and "sink is full" in logged and "'hangs'" in logged


async def test_firstresult_is_applied_after_awaiting() -> None:
    class AsyncNone:
        @hookimpl(tryfirst=True)
        async def datafn_sync_pull(self) -> None:
            await anyio.lowlevel.checkpoint()

    class AsyncAnswer:
        @hookimpl
        async def datafn_sync_pull(self, resources: list[str]) -> str:
            await anyio.lowlevel.checkpoint()
            return f"pulled {resources}"

    class Default:
        @hookimpl(trylast=True)
        def datafn_sync_pull(self) -> str:
            raise AssertionError("must not run once an earlier implementation answered")

    pm = manager(("default", Default()), ("answer", AsyncAnswer()), ("none", AsyncNone()))
    result = await pm.caller.call("datafn_sync_pull", engine=None, resources=["todos"])
    assert result == "pulled ['todos']"


async def test_propagating_hook_failure_names_the_plugin() -> None:
    class Broken:
        @hookimpl
        async def datafn_sync_push(self) -> None:
            raise KeyError("changelog")

    pm = manager(("broken", Broken()))
    with pytest.raises(HookFailed) as info:
        await pm.caller.call("datafn_sync_push", engine=None)
    assert info.value.plugin == "broken" and info.value.hook == "datafn_sync_push"
    assert isinstance(info.value.cause, KeyError)


async def test_non_firstresult_hooks_collect_every_answer() -> None:
    class Allow:
        @hookimpl
        def datafn_authorize(self) -> bool:
            return True

    class Deny:
        @hookimpl
        async def datafn_authorize(self, action: str) -> bool:
            return action != "seed"

    pm = manager(("allow", Allow()), ("deny", Deny()))
    kwargs = {"context": None, "payload": {}}
    assert await pm.caller.call("datafn_authorize", action="seed", **kwargs) == [False, True]


async def test_passthrough_errors_propagate_as_they_are_and_others_name_the_plugin() -> None:
    from datafn import Conflict

    class Phase:
        def __init__(self) -> None:
            self.error: Exception = Conflict("stale", path="if")

        @hookimpl
        async def datafn_sync_push(self) -> None:
            raise self.error

    phase = Phase()
    pm = manager(("phase", phase))
    with pytest.raises(Conflict):
        await pm.caller.call("datafn_sync_push", engine=None, passthrough=(Conflict,))
    phase.error = ValueError("bug")
    with pytest.raises(HookFailed, match="'phase'"):
        await pm.caller.call("datafn_sync_push", engine=None, passthrough=(Conflict,))


async def test_an_unbounded_call_outlives_the_hook_timeout() -> None:
    class Slow:
        @hookimpl
        async def datafn_sync_clone(self) -> str:
            await anyio.sleep(0.1)
            return "cloned"

    class Raises:
        @hookimpl(tryfirst=True)
        async def datafn_sync_pull(self) -> None:
            raise TimeoutError("a request of the phase timed out")

    pm = manager(("slow", Slow()), ("raises", Raises()), timeout=0.01)
    with pytest.raises(HookFailed, match=r"timed out after 0\.01 s"):
        await pm.caller.call("datafn_sync_clone", engine=None, resources=[])
    result = await pm.caller.call(
        "datafn_sync_clone", engine=None, resources=[], per_call_limit=None
    )
    assert result == "cloned"
    # a TimeoutError raised by the implementation itself is its own error, not a hook timeout
    with pytest.raises(HookFailed, match="TimeoutError: a request of the phase timed out"):
        await pm.caller.call("datafn_sync_pull", engine=None, resources=[], per_call_limit=None)
