"""Tests of datafn.schema: loading, schema errors with JSON paths, hashing, record validation."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from datafn.errors import SchemaError, ValidationFailed
from datafn.schema import (
    MAX_DEPTH,
    MAX_ID_LENGTH,
    FieldSpec,
    ResourceSpec,
    Schema,
    canonical_json,
    check_json_value,
    load_schema,
)

SCHEMA: dict[str, Any] = {
    "resources": [
        {
            "name": "todos",
            "version": 1,
            "idPrefix": "todo",
            "fields": [
                {"name": "title", "type": "string", "required": True, "minLength": 1},
                {"name": "done", "type": "boolean", "default": False},
                {"name": "priority", "type": "number", "min": 0, "max": 5},
                {"name": "status", "type": "string", "enum": ["open", "closed"]},
                {"name": "code", "type": "string", "pattern": "^[A-Z]{3}$", "nullable": True},
                {"name": "tags", "type": "array", "maxLength": 3},
                {"name": "meta", "type": "object"},
                {"name": "due", "type": "date"},
                {"name": "extra", "type": "json", "nullable": True},
                {"name": "note", "type": "string", "default": None, "nullable": True},
            ],
        },
        {"name": "audit", "isRemoteOnly": True, "fields": []},
    ],
    "relations": [{"from": "todos", "to": "audit", "type": "one-many"}],
}


def with_resource(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(SCHEMA)
    data["resources"][0].update(changes)
    return data


def with_field(index: int, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(SCHEMA)
    data["resources"][0]["fields"][index].update(changes)
    return data


@pytest.fixture
def schema() -> Schema:
    return load_schema(SCHEMA)


@pytest.fixture
def todos(schema: Schema) -> ResourceSpec:
    return schema.resource("todos")


# --------------------------------------------------------------------------- loading


def test_load_from_dict(schema: Schema) -> None:
    assert [r.name for r in schema.resources] == ["todos", "audit", "kv"]  # kv: built in
    todos = schema.resource("todos")
    assert todos.id_prefix == "todo"
    assert todos.version == 1
    assert schema.resource("audit").is_remote_only is True
    assert todos.field_names[:3] == ["title", "done", "priority"]
    title = todos.field("title")
    assert isinstance(title, FieldSpec)
    assert title.required and title.min_length == 1
    assert todos.field("nope") is None
    assert schema.relations == SCHEMA["relations"]


def test_load_is_idempotent_on_schema(schema: Schema) -> None:
    assert load_schema(schema) is schema


def test_default_distinguishes_none_from_unset(todos: ResourceSpec) -> None:
    note, title = todos.field("note"), todos.field("title")
    assert note is not None and title is not None
    assert note.has_default and note.default is None
    assert not title.has_default


def test_models_are_frozen(schema: Schema) -> None:
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error
        schema.resources[0].name = "other"  # type: ignore[misc]


def test_load_json_file(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA), encoding="utf-8")
    assert load_schema(path).hash == load_schema(SCHEMA).hash
    assert load_schema(str(path)).hash == load_schema(SCHEMA).hash


def test_load_toml_top_level(tmp_path: Path) -> None:
    path = tmp_path / "schema.toml"
    path.write_text(
        '[[resources]]\nname = "notes"\nidPrefix = "note"\n'
        '[[resources.fields]]\nname = "body"\ntype = "string"\nrequired = true\n',
        encoding="utf-8",
    )
    schema = load_schema(path)
    assert schema.resource("notes").field_names == ["body"]
    assert schema.resource("notes").id_prefix == "note"


def test_load_toml_tool_table(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(
        '[project]\nname = "x"\n'
        '[[tool.datafn.schema.resources]]\nname = "notes"\n'
        '[[tool.datafn.schema.resources.fields]]\nname = "body"\ntype = "string"\n',
        encoding="utf-8",
    )
    assert load_schema(path).resource("notes").field_names == ["body"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SchemaError) as info:
        load_schema(tmp_path / "absent.json")
    assert info.value.path == "$"
    assert "absent.json" in str(info.value)


@pytest.mark.parametrize(
    ("name", "content"),
    [("bad.json", "{not json"), ("bad.toml", "= nope"), ("empty.toml", 'x = "y"\n')],
)
def test_bad_file(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SchemaError) as info:
        load_schema(path)
    assert info.value.path == "$"
    assert name in str(info.value)


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text("resources: []", encoding="utf-8")
    with pytest.raises(SchemaError, match=r"schema\.yaml"):
        load_schema(path)


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        ({"resources": []}, "$.resources", "at least 1"),
        ({}, "$.resources", "missing"),
        ([], "$", "object"),
        ({"resources": [{"name": "todos"}], "bogus": 1}, "$.bogus", "unknown key"),
        (with_resource(name="1todos"), "$.resources[0].name", "pattern"),
        (with_resource(name="a" * 64), "$.resources[0].name", "pattern"),
        (with_resource(name="to-dos"), "$.resources[0].name", "pattern"),
        (with_resource(name="constructor"), "$.resources[0].name", "reserved"),
        (with_resource(version=0), "$.resources[0].version", "greater than or equal to 1"),
        (with_resource(version="1"), "$.resources[0].version", "integer"),
        (with_resource(version=True), "$.resources[0].version", "integer"),
        (with_resource(isRemoteOnly="yes"), "$.resources[0].isRemoteOnly", "boolean"),
        (with_resource(unknownKey=1), "$.resources[0].unknownKey", "unknown key"),
        (with_resource(fields={}), "$.resources[0].fields", "list"),
        (with_field(2, type="integer"), "$.resources[0].fields[2].type", "'string'"),
        (with_field(2, type=None), "$.resources[0].fields[2].type", "null"),
        (with_field(0, name="id", type="number"), "$.resources[0].fields[0].type", "string"),
        (with_field(0, name="__proto__"), "$.resources[0].fields[0].name", "reserved"),
        (with_field(0, name="prototype"), "$.resources[0].fields[0].name", "reserved"),
        (with_field(0, name="has space"), "$.resources[0].fields[0].name", "must match"),
        (with_field(1, name="title"), "$.resources[0].fields[1].name", "duplicate"),
        (with_field(0, required="true"), "$.resources[0].fields[0].required", "boolean"),
        (with_field(0, pattern="(unclosed"), "$.resources[0].fields[0].pattern", "regular"),
        (with_field(0, minLength=-1), "$.resources[0].fields[0].minLength", "greater"),
        (with_field(0, minLength=5, maxLength=2), "$.resources[0].fields[0].maxLength", "below"),
        (with_field(2, min=5, max=1), "$.resources[0].fields[2].max", "below"),
        (with_field(2, min="0"), "$.resources[0].fields[2].min", "number"),
        (with_field(2, min=float("nan")), "$.resources[0].fields[2].min", "finite"),
        (with_field(0, min=1), "$.resources[0].fields[0].min", "number fields only"),
        (with_field(2, pattern="x"), "$.resources[0].fields[2].pattern", "string fields"),
        (with_field(2, minLength=1), "$.resources[0].fields[2].minLength", "string and array"),
        (with_field(3, enum=[]), "$.resources[0].fields[3].enum", "at least 1"),
        (with_field(3, enum=["open", 3]), "$.resources[0].fields[3].enum[1]", "string"),
        (with_field(1, default="no"), "$.resources[0].fields[1].default", "boolean"),
        (with_field(1, default=None), "$.resources[0].fields[1].default", "null"),
        (with_field(2, default=9), "$.resources[0].fields[2].default", "<= 5"),
        (with_field(0, readonly=1), "$.resources[0].fields[0].readonly", "boolean"),
        (with_field(0, colour="red"), "$.resources[0].fields[0].colour", "unknown key"),
        (
            {"resources": [{"name": "a"}, {"name": "b"}, {"name": "a"}]},
            "$.resources[2].name",
            "duplicate",
        ),
        ({"resources": [{"name": "a"}], "relations": {}}, "$.relations", "list"),
    ],
)
def test_schema_errors(data: Any, path: str, fragment: str) -> None:
    with pytest.raises(SchemaError) as info:
        load_schema(data)
    assert info.value.path == path, str(info.value)
    assert fragment in info.value.reason, info.value.reason


def test_schema_error_message_says_what_was_got() -> None:
    with pytest.raises(SchemaError) as info:
        load_schema(with_field(2, type="integer"))
    assert "'integer'" in info.value.reason


def test_load_schema_refuses_other_types() -> None:
    with pytest.raises(SchemaError):
        load_schema(42)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- to_dict and hash


def test_to_dict_is_camel_case_and_omits_unset(schema: Schema) -> None:
    wire = schema.to_dict()
    todos = wire["resources"][0]
    assert todos["idPrefix"] == "todo"
    assert "isRemoteOnly" not in todos
    assert wire["resources"][1]["isRemoteOnly"] is True
    title = todos["fields"][0]
    assert title == {"name": "title", "type": "string", "required": True, "minLength": 1}
    note = todos["fields"][-1]
    assert note == {"name": "note", "type": "string", "nullable": True, "default": None}
    # The wire form loads back to the same schema.
    assert load_schema(wire).to_dict() == wire


def test_canonical_json() -> None:
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == (
        '{"a":{"c":"é","d":[1,2]},"b":1}'.encode()
    )


def test_hash_format(schema: Schema) -> None:
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", schema.hash)


def _reorder(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reorder(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reorder(v) for v in value]
    return value


def test_hash_stable_under_key_order_and_whitespace(tmp_path: Path, schema: Schema) -> None:
    reordered = load_schema(_reorder(SCHEMA))
    assert reordered.hash == schema.hash
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(_reorder(SCHEMA), indent=7), encoding="utf-8")
    assert load_schema(path).hash == schema.hash


def test_hash_ignores_spelling_of_defaults(schema: Schema) -> None:
    data = copy.deepcopy(SCHEMA)
    data["resources"][1]["version"] = 1
    data["resources"][0]["fields"][0]["readonly"] = False
    assert load_schema(data).hash == schema.hash


@pytest.mark.parametrize(
    "data",
    [
        with_resource(version=2),
        with_resource(idPrefix="t"),
        with_field(0, required=False),
        with_field(0, maxLength=10),
        with_field(1, default=True),
        with_field(3, enum=["open", "closed", "archived"]),
        {**SCHEMA, "relations": []},
    ],
)
def test_hash_changes_with_schema(schema: Schema, data: dict[str, Any]) -> None:
    assert load_schema(data).hash != schema.hash


def test_resource_lookup_unknown(schema: Schema) -> None:
    with pytest.raises(ValidationFailed) as info:
        schema.resource("nope", "tables[1]")
    assert info.value.code == "DFQL_UNKNOWN_RESOURCE"
    assert info.value.path == "tables[1]"
    with pytest.raises(ValidationFailed) as info:
        schema.resource("nope")
    assert info.value.path == "$"


def test_new_id(todos: ResourceSpec, schema: Schema) -> None:
    assert re.fullmatch(r"todo:[0-9a-f-]{36}", todos.new_id())
    assert schema.resource("audit").new_id().startswith("audit:")
    assert todos.new_id() != todos.new_id()


# --------------------------------------------------------------------------- records


def test_validate_record_applies_defaults(todos: ResourceSpec) -> None:
    out = todos.validate_record({"id": "todo:1", "title": "x"}, partial=False, path="$")
    assert out == {"id": "todo:1", "title": "x", "done": False, "note": None}


def test_validate_record_partial_skips_defaults_and_required(todos: ResourceSpec) -> None:
    assert todos.validate_record({"done": True}, partial=True, path="$") == {"done": True}


def test_validate_record_copies_defaults() -> None:
    resource = ResourceSpec.model_validate(
        {"name": "r", "fields": [{"name": "tags", "type": "array", "default": []}]}
    )
    first = resource.validate_record({}, partial=False, path="$")
    first["tags"].append("x")
    assert resource.validate_record({}, partial=False, path="$") == {"tags": []}


@pytest.mark.parametrize(
    "record",
    [
        {"title": "x", "priority": 0},
        {"title": "x", "priority": 5.0},
        {"title": "x", "priority": 2.5},
        {"title": "x", "status": "open"},
        {"title": "x", "code": "ABC"},
        {"title": "x", "code": None},
        {"title": "x", "tags": [1, "a", {"b": None}]},
        {"title": "x", "meta": {"a": {"b": [1, 2]}}},
        {"title": "x", "due": "2024-05-01"},
        {"title": "x", "due": "2024-05-01T12:30:00Z"},
        {"title": "x", "due": "2024-05-01T12:30:00.123+02:00"},
        {"title": "x", "due": 1714566600000},
        {"title": "x", "extra": None},
        {"title": "x", "extra": [1, {"a": "b"}, True, 1.5]},
        {"title": "x", "extra": "plain"},
        {"title": "x", "id": "i" * MAX_ID_LENGTH},
    ],
)
def test_valid_records(todos: ResourceSpec, record: dict[str, Any]) -> None:
    out = todos.validate_record(record, partial=False, path="r")
    for key, value in record.items():
        assert out[key] == value


def nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("record", "code", "path"),
    [
        ({"title": "x", "bogus": 1}, "DFQL_UNKNOWN_FIELD", "mutations[3].record.bogus"),
        ({"title": "x", "__proto__": {}}, "DFQL_INVALID", "mutations[3].record.__proto__"),
        ({"title": "x", "constructor": 1}, "DFQL_INVALID", "mutations[3].record.constructor"),
        ({"title": "x", "prototype": 1}, "DFQL_INVALID", "mutations[3].record.prototype"),
        (
            {"title": "x", "meta": {"a": {"__proto__": {"polluted": True}}}},
            "DFQL_INVALID",
            "mutations[3].record.meta.a.__proto__",
        ),
        (
            {"title": "x", "extra": [{"ok": 1}, {"constructor": {}}]},
            "DFQL_INVALID",
            "mutations[3].record.extra[1].constructor",
        ),
        (
            {"title": "x", "tags": [{"prototype": 1}]},
            "DFQL_INVALID",
            "mutations[3].record.tags[0].prototype",
        ),
        ({}, "DFQL_INVALID", "mutations[3].record.title"),
        ({"done": True}, "DFQL_INVALID", "mutations[3].record.title"),
        ({"title": None}, "DFQL_INVALID", "mutations[3].record.title"),
        ({"title": 3}, "DFQL_INVALID", "mutations[3].record.title"),
        ({"title": ""}, "DFQL_INVALID", "mutations[3].record.title"),
        ({"title": "x", "done": 1}, "DFQL_INVALID", "mutations[3].record.done"),
        ({"title": "x", "done": "true"}, "DFQL_INVALID", "mutations[3].record.done"),
        ({"title": "x", "priority": True}, "DFQL_INVALID", "mutations[3].record.priority"),
        ({"title": "x", "priority": "1"}, "DFQL_INVALID", "mutations[3].record.priority"),
        ({"title": "x", "priority": -1}, "DFQL_INVALID", "mutations[3].record.priority"),
        ({"title": "x", "priority": 5.5}, "DFQL_INVALID", "mutations[3].record.priority"),
        (
            {"title": "x", "priority": float("nan")},
            "DFQL_INVALID",
            "mutations[3].record.priority",
        ),
        (
            {"title": "x", "priority": float("inf")},
            "DFQL_INVALID",
            "mutations[3].record.priority",
        ),
        ({"title": "x", "priority": 10**40}, "DFQL_INVALID", "mutations[3].record.priority"),
        ({"title": "x", "status": "done"}, "DFQL_INVALID", "mutations[3].record.status"),
        ({"title": "x", "code": "abc"}, "DFQL_INVALID", "mutations[3].record.code"),
        ({"title": "x", "code": 123}, "DFQL_INVALID", "mutations[3].record.code"),
        ({"title": "x", "tags": [1, 2, 3, 4]}, "DFQL_INVALID", "mutations[3].record.tags"),
        ({"title": "x", "tags": "a"}, "DFQL_INVALID", "mutations[3].record.tags"),
        ({"title": "x", "tags": None}, "DFQL_INVALID", "mutations[3].record.tags"),
        ({"title": "x", "meta": [1]}, "DFQL_INVALID", "mutations[3].record.meta"),
        ({"title": "x", "due": "yesterday"}, "DFQL_INVALID", "mutations[3].record.due"),
        ({"title": "x", "due": 1.5}, "DFQL_INVALID", "mutations[3].record.due"),
        ({"title": "x", "due": True}, "DFQL_INVALID", "mutations[3].record.due"),
        ({"title": "x", "extra": {1, 2}}, "DFQL_INVALID", "mutations[3].record.extra"),
        (
            {"title": "x", "extra": {"a": float("nan")}},
            "DFQL_INVALID",
            "mutations[3].record.extra.a",
        ),
        ({"title": "x", "extra": {1: "a"}}, "DFQL_INVALID", "mutations[3].record.extra"),
        ({"title": "x", "meta": nest(MAX_DEPTH + 5)}, "DFQL_INVALID", None),
        ({"title": "x", "id": ""}, "DFQL_INVALID", "mutations[3].record.id"),
        ({"title": "x", "id": 7}, "DFQL_INVALID", "mutations[3].record.id"),
        (
            {"title": "x", "id": "i" * (MAX_ID_LENGTH + 1)},
            "DFQL_INVALID",
            "mutations[3].record.id",
        ),
    ],
)
def test_invalid_records(
    todos: ResourceSpec, record: dict[str, Any], code: str, path: str | None
) -> None:
    with pytest.raises(ValidationFailed) as info:
        todos.validate_record(record, partial=False, path="mutations[3].record")
    assert info.value.code == code, str(info.value)
    if path is not None:
        assert info.value.path == path
    else:
        assert info.value.path.startswith("mutations[3].record.meta")


@pytest.mark.parametrize("record", [None, [], "x", 3, True])
def test_record_must_be_object(todos: ResourceSpec, record: Any) -> None:
    with pytest.raises(ValidationFailed) as info:
        todos.validate_record(record, partial=True, path="mutations[0].record")
    assert info.value.code == "DFQL_INVALID"
    assert info.value.path == "mutations[0].record"


def test_partial_still_checks_types(todos: ResourceSpec) -> None:
    with pytest.raises(ValidationFailed) as info:
        todos.validate_record({"done": "no"}, partial=True, path="p")
    assert info.value.path == "p.done"


def test_pattern_uses_search_semantics() -> None:
    resource = ResourceSpec.model_validate(
        {"name": "r", "fields": [{"name": "s", "type": "string", "pattern": "b+"}]}
    )
    assert resource.validate_record({"s": "abbbc"}, partial=False, path="$") == {"s": "abbbc"}
    with pytest.raises(ValidationFailed):
        resource.validate_record({"s": "ac"}, partial=False, path="$")


def test_enum_does_not_confuse_booleans_and_numbers() -> None:
    resource = ResourceSpec.model_validate(
        {"name": "r", "fields": [{"name": "n", "type": "json", "enum": [1, "a"]}]}
    )
    assert resource.validate_record({"n": 1.0}, partial=False, path="$") == {"n": 1.0}
    with pytest.raises(ValidationFailed):
        resource.validate_record({"n": True}, partial=False, path="$")


def test_deep_nesting_is_refused_without_recursion_error(todos: ResourceSpec) -> None:
    with pytest.raises(ValidationFailed) as info:
        todos.validate_record({"title": "x", "extra": nest(100_000)}, partial=False, path="$")
    assert info.value.code == "DFQL_INVALID"


def test_self_referencing_value_is_refused(todos: ResourceSpec) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValidationFailed):
        todos.validate_record({"title": "x", "extra": loop}, partial=False, path="$")


def test_nesting_at_the_limit_is_accepted(todos: ResourceSpec) -> None:
    value = nest(MAX_DEPTH)
    out = todos.validate_record({"title": "x", "meta": value}, partial=False, path="$")
    assert out["meta"] == value


def test_check_json_value_root_path() -> None:
    with pytest.raises(ValidationFailed) as info:
        check_json_value({"__proto__": 1}, path="")
    assert info.value.path == "__proto__"
    with pytest.raises(ValidationFailed) as info:
        check_json_value(object(), path="")
    assert info.value.path == "$"


def test_every_schema_has_the_builtin_kv_resource() -> None:
    schema = load_schema({"resources": [{"name": "todos", "fields": []}]})
    assert schema.resource("kv").to_dict() == {
        "name": "kv",
        "version": 1,
        "idPrefix": "kv",
        "fields": [{"name": "value", "type": "json"}],
    }
    own = {"name": "kv", "version": 1, "fields": [{"name": "value", "type": "json"}]}
    kept = load_schema({"resources": [own, {"name": "todos", "fields": []}]})
    assert kept.resource_names == ["kv", "todos"]
    bad = {"name": "kv", "version": 1, "fields": [{"name": "value", "type": "string"}]}
    with pytest.raises(SchemaError) as info:
        load_schema({"resources": [bad]})
    assert info.value.path == "$.resources[0].fields"


def test_a_schema_of_the_original_format_loads_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    original = {
        "version": 3,
        "capabilities": ["timestamps"],
        "namespaced": True,
        "resources": [
            {
                "name": "tasks",
                "version": 2,
                "idPrefix": "task",
                "indices": {"base": ["title"]},
                "permissions": {"read": {"fields": ["title"]}},
                "capabilities": ["audit"],
                "fields": [
                    {"name": "id", "type": "string", "required": True, "unique": True},
                    {"name": "title", "type": "string", "required": True, "unique": True},
                ],
            }
        ],
        "relations": [{"from": "tasks", "to": "tasks", "type": "many-many", "relation": "deps"}],
    }
    with caplog.at_level("WARNING", logger="datafn.schema"):
        schema = load_schema(original)
    (warning,) = [r for r in caplog.records if r.name == "datafn.schema"]
    for key in (
        "version",
        "capabilities",
        "namespaced",
        "resources[0].indices",
        "resources[0].permissions",
        "resources[0].capabilities",
        "resources[0].fields[0] (id is implicit)",
        "resources[0].fields[1].unique",
    ):
        assert key in warning.getMessage()
    tasks = schema.resource("tasks")
    assert (tasks.version, tasks.id_prefix, tasks.field_names) == (2, "task", ["title"])
    assert schema.relations == original["relations"]
    with pytest.raises(SchemaError):  # a key neither format knows is still an error
        load_schema({"resources": [{"name": "x", "fields": [], "indexes": []}]})
