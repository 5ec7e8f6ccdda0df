"""Authentication, authorize, namespaces and isolation between namespaces."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datafn.context import Identity, RequestContext
from datafn.plugin import hookimpl

from .conftest import MakeApi, mutation, serve_app

TOKENS = {"ta": "alice", "tb": "bob"}
SERVER = {"tokens": TOKENS, "namespace_template": "user:{subject}"}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_without_tokens_requests_are_anonymous_in_the_default_namespace(
    make_api: MakeApi,
) -> None:
    async with make_api() as api:
        await api.push(mutation("insert", "t", {"title": "x"}))
        assert api.server.store._namespaces.keys() == {"datafn"}


async def test_tokens_require_a_valid_bearer(make_api: MakeApi) -> None:
    async with make_api(server=SERVER) as api:
        for headers in (
            {},
            bearer("wrong"),
            {"authorization": "Basic ta"},
            {"authorization": "Bearer"},
        ):
            error = await api.error("status", status=401, code="FORBIDDEN", headers=headers)
            assert error["details"]["path"] == "$"
        await api.ok("status", headers=bearer("ta"))
        await api.ok("status", headers={"authorization": "bearer  ta"})


async def test_each_subject_gets_its_namespace(make_api: MakeApi) -> None:
    async with make_api(server=SERVER) as api:
        await api.push(mutation("insert", "t", {"title": "alice"}), headers=bearer("ta"))
        pushed = await api.push(mutation("insert", "t", {"title": "bob"}), headers=bearer("tb"))
        assert pushed["cursorBefore"] == "0"  # bob's counter is his own
        mine = await api.pull({"todos": "0"}, headers=bearer("ta"))
        assert mine["records"]["todos"] == [{"id": "t", "title": "alice", "done": False}]
        assert set(api.server.store._namespaces) == {"user:alice", "user:bob"}


class _Tenant:
    """Resolves the namespace from a header the authenticated identity vouches for."""

    @hookimpl
    def datafn_authenticate(self, headers: dict[str, str]) -> Identity | None:
        user = headers.get("x-user")
        return Identity(user, {"tenant": headers.get("x-tenant", "t0")}) if user else None

    @hookimpl
    def datafn_resolve_namespace(self, identity: Identity | None) -> str | None:
        if identity is None:
            return None
        if identity.subject == "broken":
            raise RuntimeError("no tenant")
        if identity.subject == "empty":
            return ""
        return f"tenant:{identity.claims['tenant']}:user:{identity.subject}"

    @hookimpl
    def datafn_authorize(self, context: RequestContext, action: str, payload: Any) -> bool | None:
        if action == "seed":
            return context.identity is not None and context.identity.subject == "admin"
        return None


async def test_custom_namespace_and_authorize_hooks(make_api: MakeApi) -> None:
    async with make_api(plugins=(_Tenant(),)) as api:
        await api.push(
            mutation("insert", "t", {"title": "x"}), headers={"x-user": "u1", "x-tenant": "acme"}
        )
        assert set(api.server.store._namespaces) == {"tenant:acme:user:u1"}
        await api.error(
            "seed", {"data": {}}, status=403, code="FORBIDDEN", headers={"x-user": "u1"}
        )
        await api.ok("seed", {"data": {}}, headers={"x-user": "admin"})
        await api.error(
            "status", status=403, code="NAMESPACE_INVALID", headers={"x-user": "broken"}
        )
        await api.error("status", status=403, code="NAMESPACE_INVALID", headers={"x-user": "empty"})


async def test_the_namespace_never_comes_from_the_body(make_api: MakeApi) -> None:
    async with make_api(server=SERVER) as api:
        body = {
            "clientId": "c1",
            "namespace": "user:bob",
            "mutations": [mutation("insert", "t", {"title": "x"})],
        }
        await api.ok("push", body, headers=bearer("ta"))
        assert set(api.server.store._namespaces) == {"user:alice"}


_op = st.sampled_from(["insert", "merge", "replace", "delete"])
_ids = st.sampled_from(["a", "b", "c", "d"])
_who = st.sampled_from(["ta", "tb"])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(_who, _op, _ids, st.text(max_size=5)), max_size=25))
async def test_isolation_property_a_never_sees_b(ops: list[tuple[str, str, str, str]]) -> None:
    async with serve_app(server=SERVER) as api:
        expected: dict[str, dict[str, str]] = {"ta": {}, "tb": {}}
        for n, (who, op, rid, title) in enumerate(ops):
            record = None if op == "delete" else {"title": f"{who}:{title}"}
            mut = mutation(op, rid, record, mid=f"m{n}")
            result = await api.push(mut, headers=bearer(who))
            if not result["ok"]:
                continue
            if op == "delete":
                expected[who].pop(rid, None)
            elif op == "insert":
                expected[who].setdefault(rid, record["title"])  # type: ignore[index]
            else:
                expected[who][rid] = record["title"]  # type: ignore[index]
        for who in ("ta", "tb"):
            clone = await api.ok(
                "clone", {"clientId": "c1", "tables": ["todos"]}, headers=bearer(who)
            )
            titles = {r["id"]: r["title"] for r in clone["data"]["todos"]}
            assert titles == expected[who]
            assert all(t.startswith(f"{who}:") for t in titles.values())
            pulled = await api.pull({"todos": "0"}, headers=bearer(who))
            assert all(r["title"].startswith(f"{who}:") for r in pulled["records"].get("todos", []))
            assert all(
                r.get("title", f"{who}:").startswith(f"{who}:")
                for r in pulled["merged"].get("todos", [])
            )
