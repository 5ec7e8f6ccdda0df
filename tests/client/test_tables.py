"""Local tables: writes validated against the schema, each with its changelog entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from datafn import Client, Conflict, ValidationFailed
from datafn.events import Event
from tests.client.conftest import SCHEMA


async def test_insert_generates_prefixed_id_and_applies_defaults(client: Client) -> None:
    record = await client.table("todos").insert({"title": "write docs"})
    assert record["id"].startswith("todo:")
    assert record["done"] is False
    assert await client.table("todos").get(record["id"]) == record
    note = await client.table("notes").insert({"body": "x"})
    assert note["id"].startswith("notes:")


async def test_every_write_has_one_changelog_entry_in_order(client: Client) -> None:
    todos = client.table("todos")
    a = await todos.insert({"id": "t1", "title": "a"})
    await todos.merge({"id": "t1", "done": True}, guard={"done": False})
    await todos.replace({"id": "t1", "title": "b"})
    await todos.delete("t1")
    entries = await client.store.changelog()
    assert [e.operation for e in entries] == ["insert", "merge", "replace", "delete"]
    assert [e.record_id for e in entries] == ["t1"] * 4
    assert len({e.mutation_id for e in entries}) == 4
    assert entries[0].record == a
    assert entries[1].record == {"id": "t1", "done": True}
    assert entries[1].guard == {"done": False}
    assert entries[3].record is None
    assert await todos.get("t1") is None
    wire = entries[1].to_mutation("client-a")
    assert wire["if"] == {"done": False} and wire["clientId"] == "client-a"


async def test_merge_keeps_other_fields_and_creates_missing(client: Client) -> None:
    todos = client.table("todos")
    await todos.insert({"id": "t1", "title": "a", "priority": 1})
    merged = await todos.merge({"id": "t1", "done": True})
    assert merged == {"id": "t1", "title": "a", "priority": 1, "done": True}
    created = await todos.merge({"id": "t2", "title": "new"})
    assert created == {"id": "t2", "title": "new"}


@pytest.mark.parametrize(
    ("record", "code", "path"),
    [
        ({"title": 3}, "DFQL_INVALID", "$.title"),
        ({}, "DFQL_INVALID", "$.title"),
        ({"title": "x", "colour": "red"}, "DFQL_UNKNOWN_FIELD", "$.colour"),
        ({"title": "x" * 201}, "DFQL_INVALID", "$.title"),
        ({"title": "x", "__proto__": {}}, "DFQL_INVALID", "$.__proto__"),
    ],
)
async def test_invalid_records_are_refused_with_their_path(
    client: Client, record: dict[str, Any], code: str, path: str
) -> None:
    with pytest.raises(ValidationFailed) as info:
        await client.table("todos").insert(record)
    assert (info.value.code, info.value.path) == (code, path)
    assert await client.store.pending_count() == 0


async def test_merge_validates_the_merged_record(client: Client) -> None:
    with pytest.raises(ValidationFailed) as info:
        await client.table("todos").merge({"id": "t9", "done": True})
    assert info.value.path == "$.title"
    with pytest.raises(ValidationFailed):
        await client.table("todos").merge({"done": True})


async def test_duplicate_insert_is_a_conflict_and_writes_nothing(client: Client) -> None:
    todos = client.table("todos")
    await todos.insert({"id": "t1", "title": "a"})
    with pytest.raises(Conflict) as info:
        await todos.insert({"id": "t1", "title": "b"})
    assert info.value.path == "id"
    assert (await todos.get("t1"))["title"] == "a"  # type: ignore[index]
    assert await client.store.pending_count() == 1


async def test_unknown_and_remote_only_resources(client: Client) -> None:
    with pytest.raises(ValidationFailed) as info:
        client.table("nope")
    assert info.value.code == "DFQL_UNKNOWN_RESOURCE"
    with pytest.raises(ValidationFailed):
        client.table("audit")


async def test_mutation_applied_event(client: Client) -> None:
    seen: list[Event] = []
    client.events.on("mutation_applied", seen.append)
    record = await client.table("todos").insert({"title": "a"})
    await client.table("todos").delete(record["id"])
    assert [(e.context.operation, e.context.record_id) for e in seen] == [
        ("insert", record["id"]),
        ("delete", record["id"]),
    ]
    assert seen[0].context.resource == "todos" and seen[0].context.mutation_id


async def test_query_filters_sort_and_paging(client: Client) -> None:
    todos = client.table("todos")
    for i in range(10):
        await todos.insert(
            {
                "id": f"t{i}",
                "title": f"task {i}",
                "priority": i % 4,
                "done": i % 2 == 0,
                "tags": ["even"] if i % 2 == 0 else [],
            }
        )
    assert [r["id"] for r in await todos.query({"done": True})] == ["t0", "t2", "t4", "t6", "t8"]
    high = await todos.query({"priority": {"gte": 2}}, sort=["-priority", "title"])
    assert [r["id"] for r in high] == ["t3", "t7", "t2", "t6"]
    assert [r["id"] for r in await todos.query(sort="title", limit=3, offset=2)] == [
        "t2",
        "t3",
        "t4",
    ]
    assert len(await todos.query({"priority": {"in": [0, 1]}})) == 6
    assert len(await todos.query({"title": {"contains": "task 1"}})) == 1
    assert len(await todos.query({"tags": {"contains": "even"}})) == 5
    assert len(await todos.query({"done": {"ne": True}})) == 5
    assert await todos.count() == 10
    with pytest.raises(ValidationFailed) as info:
        await todos.query({"colour": "red"})
    assert info.value.code == "DFQL_UNKNOWN_FIELD"
    with pytest.raises(ValidationFailed):
        await todos.query({"priority": {"near": 3}})


async def test_client_id_is_generated_once_and_kept(tmp_path: Path) -> None:
    async with Client(schema=SCHEMA, store="memory://", use_env=False) as client:
        assert client.client_id.startswith("client:")
        assert await client.store.get_meta("client_id") == client.client_id
        assert client.transport is None


async def test_everything_configurable_from_pyproject(tmp_path: Path) -> None:
    import json

    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "pyproject.toml").write_text(
        '[tool.datafn]\nschema = "schema.json"\nstore = "memory://"\nclient-id = "from-toml"\n'
        '[tool.datafn.sync]\nremote = "http://127.0.0.1:9/datafn"\npush-batch-size = 7\n'
    )
    async with Client(use_env=False) as client:
        assert client.client_id == "from-toml"
        assert client.sync.config.push_batch_size == 7
        assert client.sync.config.remote == "http://127.0.0.1:9/datafn"
        assert client.schema.resource_names == ["todos", "notes", "audit", "kv"]
    async with Client(use_env=False, push_batch_size=3, client_id="arg") as client:
        assert client.sync.config.push_batch_size == 3
        assert client.client_id == "arg"


async def test_missing_schema_is_a_config_error() -> None:
    from datafn import ConfigError

    with pytest.raises(ConfigError):
        async with Client(store="memory://", use_env=False):
            pass
