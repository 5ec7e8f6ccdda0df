"""datafn_before_sync (fail-closed) and datafn_after_sync (fail-open) on the server."""

from __future__ import annotations

from typing import Any

from datafn.context import SyncContext
from datafn.errors import Veto
from datafn.plugin import hookimpl

from .conftest import MakeApi, mutation


class _Policy:
    def __init__(self) -> None:
        self.before: list[tuple[str, SyncContext]] = []
        self.after: list[tuple[str, Any]] = []

    @hookimpl
    def datafn_before_sync(self, phase: str, payload: Any, context: SyncContext) -> Any:
        self.before.append((phase, context))
        if phase == "push" and any(m.get("id") == "forbidden" for m in payload["mutations"]):
            return Veto("no such ids", code="DFQL_INVALID", path="mutations")
        if phase == "push" and any(m.get("id") == "explode" for m in payload["mutations"]):
            raise RuntimeError("policy crashed")
        if phase == "pull":
            return {**payload, "limit": 1}  # a replacement payload is used
        return None

    @hookimpl
    def datafn_after_sync(
        self, phase: str, payload: Any, result: Any, context: SyncContext
    ) -> None:
        self.after.append((phase, result))
        raise RuntimeError("observer broke")  # fail-open: ignored


async def test_before_and_after_sync_run_around_each_operation(make_api: MakeApi) -> None:
    policy = _Policy()
    async with make_api(plugins=(policy,)) as api:
        await api.push(
            mutation("insert", "a", {"title": "a"}), mutation("insert", "b", {"title": "b"})
        )
        pulled = await api.pull({"todos": "0"}, limit=100)
        assert len(pulled["records"]["todos"]) == 1 and pulled["hasMore"] is True
        await api.ok("clone", {"clientId": "c1"})
        await api.ok("reconcile", {"clientId": "c1", "resources": ["todos"]})
        await api.ok("seed", {"data": {"notes": []}})
        await api.ok("status")
    assert [phase for phase, _ in policy.before] == ["push", "pull", "clone", "reconcile", "seed"]
    assert [phase for phase, _ in policy.after] == ["push", "pull", "clone", "reconcile", "seed"]
    push_context = policy.before[0][1]
    assert push_context.side == "server" and push_context.namespace == "datafn"
    assert push_context.client_id == "c1" and push_context.resources == ("todos",)
    assert policy.after[0][1]["applied"] == ["insert-a", "insert-b"]


async def test_forms_naming_no_resource_tell_the_resources_they_serve(make_api: MakeApi) -> None:
    """A clone without tables and the global-cursor pull name no resource; the context lists
    every resource they answer (the synced ones), so a policy on resources can check them."""
    policy = _Policy()
    async with make_api(plugins=(policy,)) as api:
        await api.ok("clone", {"clientId": "c1"})
        await api.ok("pull", {"clientId": "c1", "cursor": "0"})
        await api.ok("clone", {"clientId": "c1", "tables": ["notes"]})
    synced = ("todos", "notes", "kv")  # "audit" is remote-only; "kv" is built in
    contexts = [context.resources for _, context in policy.before]
    assert contexts == [synced, synced, ("notes",)]


async def test_a_veto_refuses_with_its_code_and_nothing_is_written(make_api: MakeApi) -> None:
    async with make_api(plugins=(_Policy(),)) as api:
        error = await api.error(
            "push",
            {"clientId": "c1", "mutations": [mutation("insert", "forbidden", {"title": "x"})]},
            status=400,
            code="DFQL_INVALID",
        )
        assert error["details"]["path"] == "mutations" and "no such ids" in error["message"]
        error = await api.error(
            "push",
            {"clientId": "c1", "mutations": [mutation("insert", "explode", {"title": "x"})]},
            status=403,
            code="FORBIDDEN",
        )
        assert "_Policy" in error["message"] or "policy" in error["message"].lower()
        assert await api.server.store.namespace_seq("datafn") == 0
