"""datafn-guard: each policy refuses with its rule name, a code and a path; settings errors
name their key; on the server a veto becomes the error envelope."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from datafn import ConfigError, Identity, SyncContext, SyncVetoed
from datafn.testing.project import DatafnProject

SCHEMA: dict[str, Any] = {
    "resources": [
        {
            "name": "todos",
            "fields": [
                {"name": "title", "type": "string", "required": True},
                {"name": "done", "type": "boolean", "default": False},
            ],
        },
        {"name": "notes", "fields": [{"name": "body", "type": "string"}]},
    ]
}
CLIENT = SyncContext(side="client", client_id="c1")
SERVER = SyncContext(side="server", client_id="c1", namespace="datafn")


def push(*mutations: dict[str, Any]) -> dict[str, Any]:
    return {"clientId": "c1", "mutations": list(mutations)}


def mutation(record: dict[str, Any] | None, *, resource: str = "todos", op: str = "insert"):
    out = {"resource": resource, "version": 1, "operation": op, "id": "t1", "clientId": "c1"}
    out["mutationId"] = "m1"
    if record is not None:
        out["record"] = record
    return out


async def vetoed(
    project: DatafnProject, phase: str, payload: Any, context: SyncContext = CLIENT
) -> Any:
    runtime = project.boot()
    with pytest.raises(SyncVetoed) as info:
        await runtime.plugins.caller.before_sync(phase, payload, context)
    assert info.value.plugin == "guard"
    assert info.value.veto is not None
    return info.value.veto


async def passes(project: DatafnProject, phase: str, payload: Any, context=CLIENT) -> None:
    runtime = project.boot()
    assert await runtime.plugins.caller.before_sync(phase, payload, context) == payload


def test_guard_is_discovered_through_its_entry_point(datafn_project: DatafnProject) -> None:
    datafn_project.write("[tool.datafn.guard]\n")
    plugins = {p.name: p for p in datafn_project.boot().plugins.plugins()}
    assert plugins["guard"].distribution == "datafn-guard"
    assert {"datafn_add_settings", "datafn_configure", "datafn_before_sync"} <= set(
        plugins["guard"].hooks
    )


async def test_phases_are_allowed_per_side(datafn_project: DatafnProject) -> None:
    datafn_project.write('[tool.datafn.guard.client]\nphases = ["pull", "clone"]\n')
    veto = await vetoed(datafn_project, "push", push())
    assert (veto.rule, veto.code, veto.path) == ("client.phases", "FORBIDDEN", "$")
    assert "'push' is not allowed on the client side" in veto.reason
    await passes(datafn_project, "pull", {"clientId": "c1", "cursors": {}})
    await passes(datafn_project, "push", push(), SERVER)


async def test_resources_are_allowed_per_side_with_the_path(datafn_project: DatafnProject):
    datafn_project.write('[tool.datafn.guard.server]\nresources = ["todos"]\n', schema=SCHEMA)
    payload = push(mutation({"title": "a"}), mutation({"body": "b"}, resource="notes"))
    veto = await vetoed(datafn_project, "push", payload, SERVER)
    assert (veto.rule, veto.path) == ("server.resources", "mutations[1].resource")
    pull = {"clientId": "c1", "cursors": {"todos": "0", "notes": "0"}}
    assert (await vetoed(datafn_project, "pull", pull, SERVER)).path == "cursors.notes"
    await passes(datafn_project, "push", payload, CLIENT)
    # reconcile's content forms name their resource too: no way around the list
    for form in ("digest", "fetch"):
        body = {"clientId": "c1", form: {"resource": "notes", "ranges": [{}]}}
        assert (await vetoed(datafn_project, "reconcile", body, SERVER)).path == f"{form}.resource"
        body[form]["resource"] = "todos"
        await passes(datafn_project, "reconcile", body, SERVER)


async def test_forms_serving_every_resource_are_checked_against_the_list(
    datafn_project: DatafnProject,
) -> None:
    """The global-cursor pull and a clone without tables name no resource: the guard checks
    the resources the context says they serve, and refuses when it cannot tell."""
    datafn_project.write('[tool.datafn.guard.server]\nresources = ["todos"]\n', schema=SCHEMA)
    both = SyncContext(side="server", client_id="c1", resources=("todos", "notes"))
    todos = SyncContext(side="server", client_id="c1", resources=("todos",))
    for phase, payload, path in (
        ("pull", {"clientId": "c1", "cursor": "0"}, "cursor"),
        ("clone", {"clientId": "c1"}, "tables"),
        ("clone", {"clientId": "c1", "tables": None}, "tables"),
    ):
        veto = await vetoed(datafn_project, phase, payload, both)
        assert (veto.rule, veto.code, veto.path) == ("server.resources", "FORBIDDEN", path)
        assert "'notes' is not allowed on the server side" in veto.reason
        veto = await vetoed(datafn_project, phase, payload, SERVER)  # no resources: closed
        assert (veto.rule, veto.path) == ("server.resources", path)
        await passes(datafn_project, phase, payload, todos)
    # the forms that name their resources are checked by name, whatever the context says
    await passes(datafn_project, "clone", {"clientId": "c1", "tables": ["todos"]}, both)
    await passes(datafn_project, "pull", {"clientId": "c1", "cursors": {"todos": "0"}}, both)


async def test_the_servers_global_pull_and_full_clone_respect_the_list(
    datafn_project: DatafnProject, datafn_server: Any
) -> None:
    from datafn.schema import load_schema
    from datafn.server.memory import MemoryServerStore

    datafn_project.write('[tool.datafn.guard.server]\nresources = ["todos"]\n', schema=SCHEMA)
    store = MemoryServerStore("memory://", load_schema(SCHEMA))
    await store.seed("datafn", {"notes": [{"id": "secret", "body": "hidden"}]})
    server = datafn_server(store=store)
    async with httpx.AsyncClient(base_url=server.remote) as http:
        for route, body, path in (
            ("/pull", {"clientId": "c1", "cursor": "0"}, "cursor"),
            ("/clone", {"clientId": "c1"}, "tables"),
        ):
            answer = await http.post(route, json=body)
            assert answer.status_code == 403, answer.text
            error = answer.json()["error"]
            assert error["code"] == "FORBIDDEN" and error["details"]["path"] == path
            assert "'notes'" in error["message"] and "hidden" not in answer.text
        named = await http.post("/clone", json={"clientId": "c1", "tables": ["todos"]})
        assert named.json()["result"]["data"] == {"todos": []}


async def test_batch_and_payload_limits(datafn_project: DatafnProject) -> None:
    datafn_project.write("[tool.datafn.guard]\nmax-batch-size = 2\nmax-payload-bytes = 400\n")
    many = push(*[mutation({"title": "x"}) for _ in range(3)])
    veto = await vetoed(datafn_project, "clone_up", many)
    assert (veto.rule, veto.code, veto.path) == ("max-batch-size", "FORBIDDEN", "mutations")
    seed = {"data": {"todos": [{"id": str(i), "title": "x"} for i in range(3)]}}
    assert (await vetoed(datafn_project, "seed", seed)).path == "data"
    big = push(mutation({"title": "x" * 500}))
    veto = await vetoed(datafn_project, "push", big)
    assert veto.rule == "max-payload-bytes" and "more than 400" in veto.reason
    await passes(datafn_project, "push", push(mutation({"title": "x"})))


async def test_credentials_are_required_before_any_remote_call(
    datafn_project: DatafnProject,
) -> None:
    datafn_project.write("[tool.datafn.guard]\nrequire-credentials = true\n")
    veto = await vetoed(datafn_project, "pull", {"clientId": "c1", "cursors": {}})
    assert veto.rule == "require-credentials" and "token" in veto.reason
    assert (await vetoed(datafn_project, "pull", {}, SERVER)).rule == "require-credentials"
    signed_in = SyncContext(side="server", identity=Identity("alice"))
    await passes(datafn_project, "pull", {"clientId": "c1", "cursors": {}}, signed_in)
    datafn_project.write(
        '[tool.datafn.guard]\nrequire-credentials = true\n\n[tool.datafn.http]\ntoken = "s3"\n'
    )
    await passes(datafn_project, "pull", {"clientId": "c1", "cursors": {}})


@pytest.mark.parametrize(
    ("phase", "payload", "code", "path"),
    [
        (
            "push",
            push(mutation({"title": "a"}, resource="ghosts")),
            "DFQL_UNKNOWN_RESOURCE",
            "mutations[0].resource",
        ),
        (
            "push",
            push(mutation({"title": "a", "secret": 1})),
            "DFQL_UNKNOWN_FIELD",
            "mutations[0].record.secret",
        ),
        ("push", push(mutation({"title": 5})), "DFQL_INVALID", "mutations[0].record.title"),
        ("push", push(mutation({"done": True})), "DFQL_INVALID", "mutations[0].record.title"),
        (
            "push",
            push({**mutation({"title": "a"}), "if": {"nope": 1}}),
            "DFQL_UNKNOWN_FIELD",
            "mutations[0].if.nope",
        ),
        (
            "push",
            push(mutation({"title": "a", "__proto__": {}})),
            "DFQL_INVALID",
            "mutations[0].record.__proto__",
        ),
        (
            "pull",
            {"clientId": "c1", "cursors": {"ghosts": "0"}},
            "DFQL_UNKNOWN_RESOURCE",
            "cursors.ghosts",
        ),
        (
            "clone",
            {"clientId": "c1", "tables": ["todos", "ghosts"]},
            "DFQL_UNKNOWN_RESOURCE",
            "tables[1]",
        ),
        (
            "reconcile",
            {"clientId": "c1", "resources": ["ghosts"]},
            "DFQL_UNKNOWN_RESOURCE",
            "resources[0]",
        ),
        ("seed", {"data": {"todos": [{"id": "1"}]}}, "DFQL_INVALID", "data.todos[0].title"),
        ("pull", {"clientId": "c1", "constructor": 1}, "DFQL_INVALID", "constructor"),
    ],
)
async def test_payload_is_validated_against_the_schema_with_the_servers_codes(
    datafn_project: DatafnProject, phase: str, payload: dict[str, Any], code: str, path: str
) -> None:
    datafn_project.write(schema=SCHEMA)
    veto = await vetoed(datafn_project, phase, payload)
    assert (veto.rule, veto.code, veto.path) == ("schema", code, path)


async def test_the_original_clients_feed_cursors_are_not_resources(
    datafn_project: DatafnProject,
) -> None:
    datafn_project.write(schema=SCHEMA)
    cursors = {"todos": "0", "__datafn_actor_feed__": "0", "join_todos_tags_todos": "0"}
    await passes(datafn_project, "pull", {"clientId": "c1", "cursors": cursors})


async def test_valid_payloads_pass_schema_validation(datafn_project: DatafnProject) -> None:
    datafn_project.write(schema=SCHEMA)
    await passes(datafn_project, "push", push(mutation({"done": True}, op="merge")))
    await passes(datafn_project, "push", push(mutation(None, op="delete")))
    await passes(datafn_project, "clone", {"clientId": "c1", "page": {"table": "notes"}})
    datafn_project.write("[tool.datafn.guard]\nvalidate-schema = false\n", schema=SCHEMA)
    await passes(datafn_project, "push", push(mutation({"title": "a", "secret": 1})))


def test_the_schema_rule_costs_a_small_multiple_of_the_payload() -> None:
    import tracemalloc

    import orjson

    from datafn.schema import load_schema
    from datafn_guard.checks import GuardVeto, check_schema

    schema = load_schema(SCHEMA)
    # N items under a K-character key: building every path up front cost N×K bytes (100 MB)
    payload = {"clientId": "c1", "cursors": {"todos": "0"}, "k" * 20_000: [0] * 5_000}
    size = len(orjson.dumps(payload))
    check_schema("pull", {"clientId": "c1", "cursors": {}}, schema)  # warm up caches
    tracemalloc.start()
    try:
        check_schema("pull", payload, schema)
        payload["k" * 20_000].append(float("nan"))
        with pytest.raises(GuardVeto) as info:
            check_schema("pull", payload, schema)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.path == f"{'k' * 20_000}[5000]"
    assert peak < 4 * size + 64 * 1024, peak


POLICIES = """
from datafn import Veto

def no_deletes(phase, payload):
    if any(m["operation"] == "delete" for m in payload.get("mutations", [])):
        return "deleting is not allowed"

async def quiet_hours(context):
    if context.namespace == "night":
        raise Veto("closed", code="DFQL_INVALID", path="clientId")

def broken(payload):
    raise KeyError("oops")
"""


async def test_user_rules_by_import_path(datafn_project: DatafnProject) -> None:
    (datafn_project.path / "guard_policies_a.py").write_text(POLICIES)
    datafn_project.write(
        "[tool.datafn.guard]\n"
        'rules = ["guard_policies_a:no_deletes", "guard_policies_a.quiet_hours"]\n'
    )
    veto = await vetoed(datafn_project, "push", push(mutation(None, op="delete")))
    assert veto.rule == "guard_policies_a:no_deletes"
    assert veto.reason == "rule 'guard_policies_a:no_deletes': deleting is not allowed"
    night = SyncContext(side="server", namespace="night")
    veto = await vetoed(datafn_project, "pull", {"cursors": {}}, night)
    assert veto.rule == "guard_policies_a.quiet_hours"
    assert (veto.code, veto.path) == ("DFQL_INVALID", "clientId")
    await passes(datafn_project, "push", push(mutation({"title": "a"})))


async def test_a_failing_rule_refuses_naming_the_rule(datafn_project: DatafnProject) -> None:
    (datafn_project.path / "guard_policies_b.py").write_text(POLICIES)
    datafn_project.write('[tool.datafn.guard]\nrules = ["guard_policies_b:broken"]\n')
    veto = await vetoed(datafn_project, "pull", {"cursors": {}})
    assert veto.rule == "guard_policies_b:broken" and "KeyError" in veto.reason


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ('[tool.datafn.guard]\nrules = ["no_such_module_x:f"]', "rules[0]", "cannot import"),
        ('[tool.datafn.guard]\nrules = ["os:no_such_function"]', "rules[0]", "no attribute"),
        ('[tool.datafn.guard]\nrules = ["os:sep"]', "rules[0]", "not callable"),
        ('[tool.datafn.guard]\nrules = ["os.path:join"]', "rules[0]", "takes 'a'"),
        ('[tool.datafn.guard.client]\nphases = ["psuh"]', "client.phases[0]", "unknown phase"),
        ('[tool.datafn.guard.server]\nresources = ["x"]', "server.resources[0]", "no resource"),
        ("[tool.datafn.guard]\nmax-batch-size = 0", "max-batch-size", "expected an integer"),
    ],
)
def test_bad_settings_name_the_key(
    datafn_project: DatafnProject, table: str, key: str, message: str
) -> None:
    datafn_project.write(table, schema=SCHEMA)
    with pytest.raises(ConfigError) as info:
        datafn_project.boot()
    assert info.value.key == f"tool.datafn.guard.{key}"
    assert message in str(info.value)


def test_schema_validation_asked_for_without_a_schema(datafn_project: DatafnProject) -> None:
    datafn_project.write("[tool.datafn.guard]\nvalidate-schema = true\n")
    with pytest.raises(ConfigError, match="needs a schema"):
        datafn_project.boot()


async def test_on_the_server_a_veto_becomes_the_envelope_with_the_path(
    datafn_project: DatafnProject, datafn_server: Any
) -> None:
    datafn_project.write(
        '[tool.datafn.guard.server]\nresources = ["todos"]\n\n[tool.datafn.guard]\n'
        "max-batch-size = 1\n",
        schema=SCHEMA,
    )
    server = datafn_server()
    async with httpx.AsyncClient(base_url=server.remote) as http:
        answer = await http.post("/push", json=push(mutation({"body": "x"}, resource="notes")))
        assert answer.status_code == 403
        error = answer.json()["error"]
        assert error["code"] == "FORBIDDEN"
        assert error["details"]["path"] == "mutations[0].resource"
        assert "guard" in error["message"] and "server.resources" in error["message"]
        answer = await http.post("/pull", json={"clientId": "c1", "cursors": {"notes": "0"}})
        assert answer.json()["error"]["details"]["path"] == "cursors.notes"
        ok = await http.post("/push", json=push(mutation({"title": "fine"})))
        assert ok.json()["ok"] is True
