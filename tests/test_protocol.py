"""Tests of datafn.protocol: wire models, error paths, envelopes, WebSocket messages."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datafn.errors import (
    Conflict,
    Forbidden,
    ProtocolError,
    TransportError,
    ValidationFailed,
)
from datafn.protocol import (
    ACTIONS,
    CAPABILITIES,
    ClonePage,
    CloneRequest,
    CloneResult,
    CursorMessage,
    HelloMessage,
    Mutation,
    PullRequest,
    PullResult,
    PushError,
    PushRequest,
    PushResult,
    ReconcileRequest,
    ReconcileResult,
    SeedRequest,
    SeedResult,
    StatusResult,
    WireModel,
    format_cursor,
    parse_cursor,
    parse_envelope,
    parse_ws_message,
    success_envelope,
)

MUTATION: dict[str, Any] = {
    "resource": "todos",
    "version": 1,
    "operation": "insert",
    "id": "todo:1",
    "record": {"id": "todo:1", "title": "x", "note": None},
    "clientId": "c1",
    "mutationId": "m1",
    "if": {"title": "old"},
}


def push(*mutations: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"clientId": "c1", "mutations": list(mutations), **top}


def mutation(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(MUTATION)
    for key, value in changes.items():
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def test_constants() -> None:
    assert ACTIONS == ("status", "clone", "pull", "push", "reconcile", "seed")
    assert CAPABILITIES == (
        "sync.clone",
        "sync.pull",
        "sync.push",
        "sync.reconcile",
        "sync.seed",
    )


# --------------------------------------------------------------------------- cursors


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("42", 42), (str(2**63 - 1), 2**63 - 1)])
def test_parse_cursor(text: str, value: int) -> None:
    assert parse_cursor(text, "cursor") == value
    assert format_cursor(value) == text


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "-1",
        "+1",
        "01",
        "00",
        "1.0",
        " 1",
        "1 ",
        "1e3",
        "0x10",
        "1" * 21,
        "9" * 20,
        str(2**63),
        "٣",
        5,
        None,
    ],
)
def test_parse_cursor_refuses(bad: Any) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_cursor(bad, "cursors.todos")
    assert info.value.code == "DFQL_INVALID"
    assert info.value.path == "cursors.todos"


@pytest.mark.parametrize("bad", [-1, True, 10**20, "1"])
def test_format_cursor_refuses(bad: Any) -> None:
    with pytest.raises(ValueError):
        format_cursor(bad)


# --------------------------------------------------------------------------- requests


def parse_push(body: Any) -> list[Mutation]:
    """The request checked as a whole, then each mutation parsed on its own (the server
    refuses a mutation that does not parse alone, the rest of the batch goes on)."""
    request = PushRequest.from_wire(body)
    return [
        Mutation.from_wire(m, path_prefix=f"mutations[{i}]")
        for i, m in enumerate(request.mutations)
    ]


def test_push_round_trip_keeps_camel_case() -> None:
    request = PushRequest.from_wire(push(MUTATION))
    m = parse_push(push(MUTATION))[0]
    assert m.client_id == "c1" and m.mutation_id == "m1" and m.if_ == {"title": "old"}
    wire = {**request.to_wire(), "mutations": [m.to_wire()]}
    assert wire == push(MUTATION)
    assert "mutationId" in wire["mutations"][0] and "if" in wire["mutations"][0]
    assert "mutation_id" not in json.dumps(wire)
    # Null values inside records survive; absent optional fields stay absent.
    assert wire["mutations"][0]["record"]["note"] is None
    (delete,) = parse_push(push(mutation(operation="delete", record=..., **{"if": ...})))
    assert delete.to_wire().keys() == {
        "resource",
        "version",
        "operation",
        "id",
        "clientId",
        "mutationId",
    }
    assert parse_push(wire) == [m]


def test_python_names_are_accepted() -> None:
    m = Mutation(
        resource="todos",
        operation="merge",
        id="a",
        record={"x": 1},
        client_id="c",
        mutation_id="m",
        if_={"x": 0},
    )
    assert m.to_wire()["if"] == {"x": 0}
    assert m.version == 1


def test_unknown_top_level_keys_are_ignored() -> None:
    request = PushRequest.from_wire(push(MUTATION, futureFeature={"x": 1}))
    assert request.client_id == "c1"
    assert "futureFeature" not in request.to_wire()


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"mutations": []}, "clientId"),
        ({"clientId": "", "mutations": []}, "clientId"),
        ({"clientId": "x" * 256, "mutations": []}, "clientId"),
        ({"clientId": 7, "mutations": []}, "clientId"),
        ({"clientId": "c1"}, "mutations"),
        ({"clientId": "c1", "mutations": {}}, "mutations"),
        (push(mutation(), "nope"), "mutations[1]"),
        (push(mutation(), mutation(mutationId=...)), "mutations[1].mutationId"),
        (push(mutation(), mutation(mutationId="")), "mutations[1].mutationId"),
        (push(mutation(mutationId="m" * 256)), "mutations[0].mutationId"),
        (push(mutation(mutationId=3)), "mutations[0].mutationId"),
        (push(mutation(operation="upsert")), "mutations[0].operation"),
        (push(mutation(operation=None)), "mutations[0].operation"),
        (push(mutation(id="")), "mutations[0].id"),
        (push(mutation(id="i" * 256)), "mutations[0].id"),
        (push(mutation(id=1)), "mutations[0].id"),
        (push(mutation(id=...)), "mutations[0].id"),
        (push(mutation(resource=...)), "mutations[0].resource"),
        (push(mutation(version=0)), "mutations[0].version"),
        (push(mutation(version="1")), "mutations[0].version"),
        (push(mutation(version=True)), "mutations[0].version"),
        (push(mutation(version=1.0)), "mutations[0].version"),
        (push(mutation(version=10**30)), "mutations[0].version"),
        (push(mutation(record=...)), "mutations[0].record"),
        (push(mutation(record=None)), "mutations[0].record"),
        (push(mutation(operation="merge", record=...)), "mutations[0].record"),
        (push(mutation(operation="replace", record=[])), "mutations[0].record"),
        (push(mutation(record={"id": "other"})), "mutations[0].record.id"),
        (push(mutation(clientId="c2")), "mutations[0].clientId"),
        (push(mutation(), mutation(clientId=...)), "mutations[1].clientId"),
        (push(mutation(**{"if": []})), "mutations[0].if"),
        (
            push(mutation(record={"a": {"b": {"__proto__": 1}}})),
            "mutations[0].record.a.b.__proto__",
        ),
        (push(mutation(record={"constructor": 1})), "mutations[0].record.constructor"),
        (push(mutation(record={"x": float("nan")})), "mutations[0].record.x"),
    ],
)
def test_push_request_errors(body: Any, path: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_push(body)
    assert info.value.code == "DFQL_INVALID"
    assert info.value.path == path, str(info.value)
    assert info.value.http_status == 400


def test_delete_needs_no_record() -> None:
    (delete,) = parse_push(push(mutation(operation="delete", record=...)))
    assert delete.record is None


def test_path_prefix() -> None:
    with pytest.raises(ValidationFailed) as info:
        Mutation.from_wire(mutation(id=""), path_prefix="body.mutations[0]")
    assert info.value.path == "body.mutations[0].id"
    with pytest.raises(ValidationFailed) as info:
        PushRequest.from_wire([], path_prefix="body")
    assert info.value.path == "body"


@pytest.mark.parametrize("body", [None, [], "x", 3, 1.5, True, [{"clientId": "c"}]])
def test_non_object_bodies(body: Any) -> None:
    for model in (PushRequest, PullRequest, CloneRequest, ReconcileRequest, SeedRequest):
        with pytest.raises(ValidationFailed) as info:
            model.from_wire(body)
        assert info.value.path == "$"


@pytest.mark.parametrize(
    "body",
    [
        push(mutation(record={"title": nest(200)})),
        push(mutation(record={"title": nest(100_000)})),
        {"clientId": "c1", "cursors": nest(5_000)},
        nest(100_000),
        {"clientId": "c1", "mutations": [mutation(record={"__proto__": {"admin": True}})]},
        {"clientId": "c1", "__proto__": {"x": 1}, "mutations": []},
        {"clientId": "c1", "mutations": [mutation(version=-(10**4000))]},
        {"clientId": "c1", "mutations": [mutation(id=10**4000)]},
        {"clientId": "c1", "mutations": [mutation(record={"x": {1: 2}})]},
        {"clientId": "c1", "mutations": [mutation(record={"x": object()})]},
        {1: "x"},
    ],
)
def test_hostile_bodies_give_validation_failed(body: Any) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_push(body)
    assert info.value.code == "DFQL_INVALID"


def test_pull_request() -> None:
    body = {"clientId": "c1", "cursors": {"todos": "42", "notes": "0"}, "limit": 200}
    request = PullRequest.from_wire(body)
    assert request.cursors == {"todos": "42", "notes": "0"}
    assert request.limit == 200
    assert request.to_wire() == body
    assert "limit" not in PullRequest.from_wire({"clientId": "c", "cursors": {}}).to_wire()


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"cursors": {}}, "clientId"),
        ({"clientId": "c"}, "cursors"),
        ({"clientId": "c", "cursors": []}, "cursors"),
        ({"clientId": "c", "cursors": {"todos": "-1"}}, "cursors.todos"),
        ({"clientId": "c", "cursors": {"todos": "01"}}, "cursors.todos"),
        ({"clientId": "c", "cursors": {"todos": "abc"}}, "cursors.todos"),
        ({"clientId": "c", "cursors": {"todos": -1}}, "cursors.todos"),
        ({"clientId": "c", "cursors": {"todos": None}}, "cursors.todos"),
        ({"clientId": "c", "cursors": {"todos": "1" * 21}}, "cursors.todos"),
        ({"clientId": "c", "cursors": {}, "limit": 0}, "limit"),
        ({"clientId": "c", "cursors": {}, "limit": "10"}, "limit"),
        ({"clientId": "c", "cursors": {}, "limit": 10**100}, "limit"),
        ({"clientId": "c", "cursors": {"prototype": "1"}}, "cursors.prototype"),
    ],
)
def test_pull_request_errors(body: Any, path: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        PullRequest.from_wire(body)
    assert info.value.path == path, str(info.value)


def test_numeric_cursor_is_normalised_to_string() -> None:
    assert PullRequest.from_wire({"clientId": "c", "cursors": {"t": 7}}).cursors == {"t": "7"}


def test_clone_request() -> None:
    body = {"clientId": "c", "tables": ["todos"], "page": {"table": "todos", "afterId": None}}
    request = CloneRequest.from_wire(body)
    assert request.page == ClonePage(table="todos", after_id=None, limit=1000)
    assert request.to_wire() == {
        "clientId": "c",
        "tables": ["todos"],
        "page": {"table": "todos", "limit": 1000},
    }
    assert CloneRequest.from_wire({"clientId": "c"}).tables is None


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({}, "clientId"),
        ({"clientId": None}, "clientId"),
        ({"clientId": "c", "tables": "todos"}, "tables"),
        ({"clientId": "c", "tables": [1]}, "tables[0]"),
        ({"clientId": "c", "page": {}}, "page.table"),
        ({"clientId": "c", "page": {"table": "t", "limit": 0}}, "page.limit"),
        ({"clientId": "c", "page": {"table": "t", "afterId": 5}}, "page.afterId"),
    ],
)
def test_clone_request_errors(body: Any, path: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        CloneRequest.from_wire(body)
    assert info.value.path == path, str(info.value)


def test_reconcile_and_seed_requests() -> None:
    assert ReconcileRequest.from_wire({"clientId": "c", "resources": ["a"]}).resources == ["a"]
    seed = SeedRequest.from_wire({"data": {"todos": [{"id": "t1"}]}})
    assert seed.data == {"todos": [{"id": "t1"}]}
    with pytest.raises(ValidationFailed) as info:
        SeedRequest.from_wire({"data": {"todos": [1]}})
    assert info.value.path == "data.todos[0]"
    with pytest.raises(ValidationFailed) as info:
        ReconcileRequest.from_wire({"clientId": "c"})
    assert info.value.path == "resources"


# --------------------------------------------------------------------------- responses


def test_result_round_trips() -> None:
    results: list[tuple[type[WireModel], dict[str, Any]]] = [
        (
            StatusResult,
            {
                "schemaHash": "sha256:" + "0" * 64,
                "capabilities": list(CAPABILITIES),
                "limits": {"maxBatchSize": 500},
                "serverTimeMs": 1,
            },
        ),
        (
            CloneResult,
            {
                "data": {"todos": [{"id": "a"}]},
                "cursors": {"todos": "3"},
                "next": {"todos": None},
                "paginated": True,
            },
        ),
        (
            PullResult,
            {
                "records": {"todos": [{"id": "a", "x": None}]},
                "merged": {},
                "deleted": {"todos": ["b"]},
                "cursors": {"todos": "9"},
                "hasMore": False,
            },
        ),
        (
            PushResult,
            {
                "ok": False,
                "applied": ["m1"],
                "errors": [
                    {
                        "mutationId": "m2",
                        "code": "CONFLICT",
                        "message": "exists",
                        "path": "id",
                        "retryable": False,
                    }
                ],
                "cursor": "10",
                "cursorBefore": "8",
                "cursors": {"todos": "10"},
            },
        ),
        (ReconcileResult, {"counts": {"todos": 3}}),
        (SeedResult, {"inserted": {"todos": 2}}),
    ]
    for model, wire in results:
        parsed = model.from_wire(wire)
        assert parsed.to_wire() == wire, model.__name__
        assert parse_envelope(success_envelope(parsed), model) == parsed
        assert parse_envelope(json.loads(json.dumps(success_envelope(wire))), model) == parsed


def test_push_result_fields() -> None:
    result = PushResult(
        ok=True,
        applied=["m"],
        errors=[PushError(mutation_id="x", code="INTERNAL", message="m", retryable=True)],
        cursor="5",
        cursor_before="4",
        cursors={},
    )
    wire = result.to_wire()
    assert wire["cursorBefore"] == "4"
    assert wire["errors"][0] == {
        "mutationId": "x",
        "code": "INTERNAL",
        "message": "m",
        "path": "$",
        "retryable": True,
    }


# --------------------------------------------------------------------------- envelopes


def test_success_envelope() -> None:
    assert success_envelope({"counts": {}}) == {"ok": True, "result": {"counts": {}}}


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        ({"code": "FORBIDDEN", "message": "no", "details": {"path": "$"}}, Forbidden),
        ({"code": "CONFLICT", "message": "c", "details": {"path": "cursors.todos"}}, Conflict),
        (
            {"code": "DFQL_UNKNOWN_RESOURCE", "message": "u", "details": {"path": "x"}},
            ValidationFailed,
        ),
        ({"code": "INTERNAL", "message": "boom", "details": {"path": "$"}}, ProtocolError),
    ],
)
def test_parse_failure_envelope(error: dict[str, Any], cls: type[ProtocolError]) -> None:
    with pytest.raises(cls) as info:
        parse_envelope({"ok": False, "error": error}, ReconcileResult)
    assert info.value.code == error["code"]
    assert info.value.path == error["details"]["path"]


@pytest.mark.parametrize(
    "body",
    [
        None,
        "ok",
        [],
        {},
        {"ok": "true", "result": {}},
        {"ok": True},
        {"ok": True, "result": {"counts": {}}, "error": {}},
        {"ok": False},
        {"ok": False, "error": "bad"},
        {"result": {"counts": {}}},
    ],
)
def test_parse_envelope_not_an_envelope(body: Any) -> None:
    with pytest.raises(TransportError) as info:
        parse_envelope(body, ReconcileResult)
    assert info.value.code == "TRANSPORT_ERROR"


def test_parse_envelope_malformed_result() -> None:
    with pytest.raises(TransportError) as info:
        parse_envelope({"ok": True, "result": {"counts": {"todos": "x"}}}, ReconcileResult)
    assert info.value.path == "result.counts.todos"


# --------------------------------------------------------------------------- WebSocket


def test_ws_messages() -> None:
    hello = HelloMessage(client_id="c", cursors={"todos": "3"})
    assert hello.to_wire() == {"type": "hello", "clientId": "c", "cursors": {"todos": "3"}}
    assert parse_ws_message(hello.to_wire()) == hello
    assert parse_ws_message(json.dumps(hello.to_wire())) == hello
    cursor = CursorMessage(cursor="12")
    assert cursor.to_wire() == {"type": "cursor", "cursor": "12"}
    assert parse_ws_message(json.dumps(cursor.to_wire()).encode()) == cursor


@pytest.mark.parametrize(
    "data",
    [
        None,
        "",
        "not json",
        "[" * 100_000,
        b"\xff",
        [],
        {},
        {"type": "ping"},
        {"type": ["hello"]},
        {"type": {"a": 1}},
        {"type": "cursor"},
        {"type": "cursor", "cursor": "-1"},
        {"type": "hello", "cursors": {}},
        {"type": "hello", "clientId": "c", "cursors": {"a": "x"}},
        nest(100_000),
        42,
    ],
)
def test_ws_not_understood(data: Any) -> None:
    assert parse_ws_message(data) is None


# --------------------------------------------------------------------------- property tests

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=40,
)

mutation_like = st.fixed_dictionaries(
    {},
    optional={
        "resource": json_values | st.just("todos"),
        "operation": st.sampled_from(["insert", "merge", "replace", "delete"]) | json_values,
        "id": json_values | st.just("t1"),
        "record": json_values | st.just({"title": "x"}),
        "clientId": json_values | st.just("c1"),
        "mutationId": json_values | st.just("m1"),
        "version": json_values | st.just(1),
        "if": json_values,
    },
)

request_like = st.fixed_dictionaries(
    {},
    optional={
        "clientId": json_values | st.just("c1"),
        "mutations": st.lists(mutation_like, max_size=3) | json_values,
        "cursors": st.dictionaries(st.text(max_size=5), json_values | st.just("1")) | json_values,
        "limit": json_values,
        "tables": json_values,
        "page": json_values
        | st.fixed_dictionaries(
            {"table": st.just("todos")}, optional={"afterId": json_values, "limit": json_values}
        ),
    },
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(body=json_values | request_like)
def test_from_wire_only_raises_validation_failed(body: Any) -> None:
    for model in (PushRequest, PullRequest, CloneRequest):
        try:
            parsed = model.from_wire(body)
        except ValidationFailed as exc:
            assert exc.code == "DFQL_INVALID"
            assert isinstance(exc.path, str) and exc.path
        else:
            assert isinstance(parsed, model)
            json.dumps(parsed.to_wire())


@settings(max_examples=200, deadline=None)
@given(data=json_values | st.text())
def test_parse_ws_message_never_raises(data: Any) -> None:
    result = parse_ws_message(data)
    assert result is None or isinstance(result, HelloMessage | CursorMessage)
