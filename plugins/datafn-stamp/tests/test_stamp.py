"""datafn-stamp: outgoing mutations carry updatedAt/updatedBy; the server stores them."""

from __future__ import annotations

from typing import Any

SCHEMA: dict[str, Any] = {
    "resources": [
        {
            "name": "todos",
            "fields": [
                {"name": "title", "type": "string"},
                {"name": "updatedAt", "type": "date"},
                {"name": "updatedBy", "type": "string"},
            ],
        },
        {
            "name": "notes",
            "fields": [{"name": "body", "type": "string"}, {"name": "updatedAt", "type": "number"}],
        },
    ]
}


async def test_push_stamps_resources_that_have_the_fields(
    datafn_project: Any, datafn_server: Any, datafn_client: Any
) -> None:
    datafn_project.write('[tool.datafn.stamp]\nuser = "alice"\n', schema=SCHEMA)
    server = datafn_server()
    async with datafn_client() as client:
        todo = await client.table("todos").insert({"title": "a"})
        note = await client.table("notes").insert({"body": "b"})
        assert "updatedAt" not in todo, "the local write is not stamped"
        await client.sync.push()
    async with datafn_client(store="memory://") as other:
        await other.sync.clone()
        pulled = await other.table("todos").get(todo["id"])
        pulled_note = await other.table("notes").get(note["id"])
    assert pulled is not None and pulled["updatedBy"] == "alice"
    assert pulled["updatedAt"].endswith("Z")
    assert pulled_note is not None and isinstance(pulled_note["updatedAt"], int)
    assert "updatedBy" not in pulled_note
    assert "/datafn/push" in server.paths()


async def test_without_a_schema_nothing_is_stamped(datafn_project: Any) -> None:
    from datafn import SyncContext

    datafn_project.write('[tool.datafn.stamp]\nuser = "alice"\n')
    runtime = datafn_project.boot()
    payload = {"mutations": [{"resource": "todos", "operation": "insert", "record": {}}]}
    context = SyncContext(side="client")
    assert await runtime.plugins.caller.before_sync("push", payload, context) == payload
