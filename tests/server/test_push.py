"""Push semantics: operations, if guards, idempotency, retryable flags, cursors."""

from __future__ import annotations

from .conftest import Api, MakeApi, mutation


async def _records(api: Api, resource: str = "todos") -> dict[str, dict]:
    clone = await api.ok("clone", {"clientId": "c", "tables": [resource]})
    return {r["id"]: r for r in clone["data"][resource]}


async def test_insert_applies_fills_defaults_and_allocates_seqs(api: Api) -> None:
    result = await api.push(
        mutation("insert", "t1", {"title": "a"}), mutation("insert", "t2", {"title": "b"})
    )
    assert result == {
        "ok": True,
        "applied": ["insert-t1", "insert-t2"],
        "errors": [],
        "cursor": "2",
        "cursorBefore": "0",
        "cursors": {},
    }
    assert await _records(api) == {
        "t1": {"id": "t1", "title": "a", "done": False},
        "t2": {"id": "t2", "title": "b", "done": False},
    }


async def test_insert_of_identical_record_is_a_noop_of_a_different_one_a_conflict(api: Api) -> None:
    await api.push(mutation("insert", "t1", {"title": "a"}))
    same = await api.push(mutation("insert", "t1", {"title": "a", "done": False}, mid="again"))
    assert same["applied"] == ["again"] and same["cursor"] == "1" and same["cursorBefore"] == "1"
    other = await api.push(mutation("insert", "t1", {"title": "b"}, mid="other"))
    assert other["ok"] is False and other["applied"] == []
    assert other["errors"] == [
        {
            "mutationId": "other",
            "code": "CONFLICT",
            "message": other["errors"][0]["message"],
            "path": "id",
            "retryable": False,
        }
    ]
    assert (await _records(api))["t1"]["title"] == "a"


async def test_merge_updates_and_creates(api: Api) -> None:
    await api.push(mutation("insert", "t1", {"title": "a", "rank": 1}))
    await api.push(
        mutation("merge", "t1", {"done": True}), mutation("merge", "t9", {"title": "new"})
    )
    records = await _records(api)
    assert records["t1"] == {"id": "t1", "title": "a", "rank": 1, "done": True}
    assert records["t9"] == {"id": "t9", "title": "new", "done": False}


async def test_a_merge_that_creates_a_record_must_make_a_valid_one(api: Api) -> None:
    result = await api.push(
        mutation("merge", "t9", {"done": True}),  # no title: required
        mutation("merge", "t8", {"title": "complete"}),
    )
    (error,) = result["errors"]
    assert error["mutationId"] == "merge-t9"
    assert (error["code"], error["path"], error["retryable"]) == (
        "DFQL_INVALID",
        "mutations[0].record.title",
        False,
    )
    assert result["applied"] == ["merge-t8"]
    records = await _records(api)
    assert "t9" not in records and records["t8"]["title"] == "complete"
    # once the record exists, the same partial merge is an update
    await api.push(mutation("insert", "t9", {"title": "now there"}))
    again = await api.push(mutation("merge", "t9", {"done": True}, mid="merge-t9-again"))
    assert again["applied"] == ["merge-t9-again"]
    # a replay of the refused merge answers its first outcome, never applies it
    replay = await api.push(mutation("merge", "t9", {"done": True}))
    assert [e["code"] for e in replay["errors"]] == ["DFQL_INVALID"]


async def test_replace_is_a_full_upsert(api: Api) -> None:
    await api.push(mutation("insert", "t1", {"title": "a", "rank": 1}))
    await api.push(
        mutation("replace", "t1", {"title": "b"}), mutation("replace", "t2", {"title": "c"})
    )
    records = await _records(api)
    assert records["t1"] == {"id": "t1", "title": "b", "done": False}
    assert records["t2"]["title"] == "c"


async def test_delete_and_delete_of_missing_record(api: Api) -> None:
    await api.push(mutation("insert", "t1", {"title": "a"}))
    result = await api.push(mutation("delete", "t1"), mutation("delete", "ghost"))
    assert result["applied"] == ["delete-t1", "delete-ghost"]
    assert result["cursor"] == "2"  # the missing record recorded nothing
    assert await _records(api) == {}


async def test_if_guard(api: Api) -> None:
    await api.push(mutation("insert", "t1", {"title": "a"}))
    ok = await api.push(mutation("merge", "t1", {"title": "b"}, mid="m1", guard={"title": "a"}))
    assert ok["ok"]
    stale = await api.push(mutation("merge", "t1", {"title": "c"}, mid="m2", guard={"title": "a"}))
    assert stale["errors"][0]["code"] == "CONFLICT"
    assert stale["errors"][0]["path"] == "if"
    assert stale["errors"][0]["retryable"] is False
    missing = await api.push(mutation("delete", "nope", mid="m3", guard={"title": "x"}))
    assert missing["errors"][0]["code"] == "CONFLICT" and missing["errors"][0]["path"] == "if"
    null_guard = await api.push(
        mutation("merge", "t1", {"rank": 2}, mid="m4", guard={"rank": None})
    )
    assert null_guard["ok"]
    assert (await _records(api))["t1"] == {"id": "t1", "title": "b", "done": False, "rank": 2}


async def test_replays_are_idempotent(api: Api) -> None:
    first = await api.push(
        mutation("insert", "t1", {"title": "a"}), mutation("merge", "t1", {"rank": 1})
    )
    assert first["cursor"] == "2"
    await api.push(mutation("merge", "t1", {"rank": 5}, mid="later"))
    replay = await api.push(
        mutation("insert", "t1", {"title": "a"}), mutation("merge", "t1", {"rank": 1})
    )
    assert replay["applied"] == ["insert-t1", "merge-t1"]
    assert replay["cursor"] == replay["cursorBefore"] == "3"
    assert (await _records(api))["t1"]["rank"] == 5  # the replayed merge changed nothing


async def test_replay_of_a_conflict_reports_the_conflict(api: Api) -> None:
    await api.push(mutation("insert", "t1", {"title": "a"}))
    conflict = await api.push(mutation("insert", "t1", {"title": "b"}, mid="x"))
    await api.push(mutation("delete", "t1"))
    replay = await api.push(mutation("insert", "t1", {"title": "b"}, mid="x"))
    assert replay["errors"] == conflict["errors"]
    assert await _records(api) == {}


async def test_same_mutation_id_twice_in_one_batch_applies_once(api: Api) -> None:
    result = await api.push(
        mutation("insert", "t1", {"title": "a"}, mid="m"),
        mutation("replace", "t1", {"title": "b"}, mid="m"),
    )
    assert result["applied"] == ["m", "m"] and result["cursor"] == "1"
    assert (await _records(api))["t1"]["title"] == "a"


async def test_idempotency_is_per_client(api: Api) -> None:
    await api.push(mutation("insert", "t1", {"title": "a"}, mid="m", client_id="A"), client_id="A")
    result = await api.push(
        mutation("replace", "t1", {"title": "b"}, mid="m", client_id="B"), client_id="B"
    )
    assert result["cursor"] == "2"


async def test_validation_errors_are_per_mutation_and_not_retryable(api: Api) -> None:
    result = await api.push(
        mutation("insert", "t1", {"title": "a"}),
        mutation("insert", "t2", {"title": 5}),
        mutation("insert", "t3", {"title": "c", "color": "red"}),
        mutation("insert", "n1", {"body": "x"}, resource="ghosts"),
        mutation("insert", "t4", {}),
        mutation("merge", "t1", {"done": True}, guard={"nope": 1}, mid="g"),
    )
    codes = [(e["mutationId"], e["code"], e["path"], e["retryable"]) for e in result["errors"]]
    assert codes == [
        ("insert-t2", "DFQL_INVALID", "mutations[1].record.title", False),
        ("insert-t3", "DFQL_UNKNOWN_FIELD", "mutations[2].record.color", False),
        ("insert-n1", "DFQL_UNKNOWN_RESOURCE", "mutations[3].resource", False),
        ("insert-t4", "DFQL_INVALID", "mutations[4].record.title", False),
        ("g", "DFQL_UNKNOWN_FIELD", "mutations[5].if.nope", False),
    ]
    assert result["applied"] == ["insert-t1"]


async def test_a_replay_stays_applied_even_if_it_no_longer_validates(make_api: MakeApi) -> None:
    async with make_api() as api:
        await api.push(mutation("insert", "t1", {"title": "a"}, mid="m"))
        replay = await api.push(mutation("insert", "t1", {"title": 1}, mid="m"))
        assert replay["applied"] == ["m"]


async def test_request_level_errors(api: Api) -> None:
    error = await api.error(
        "push",
        {"clientId": "c1", "mutations": [mutation("insert", "t", {"title": "a"}, client_id="c2")]},
        status=400,
        code="DFQL_INVALID",
    )
    assert error["details"]["path"] == "mutations[0].clientId"
    error = await api.error(
        "push",
        {"clientId": "c1", "mutations": [mutation("insert", "t", {"title": "a", "__proto__": {}})]},
        status=400,
        code="DFQL_INVALID",
    )
    assert error["details"]["path"] == "mutations[0].record.__proto__"
    assert await _records(api) == {}


async def test_cursor_before_shows_other_writers(api: Api) -> None:
    await api.push(mutation("insert", "t1", {"title": "a"}, client_id="A"), client_id="A")
    mine = await api.push(
        mutation("insert", "n1", {"body": "b"}, resource="notes", client_id="B"), client_id="B"
    )
    assert mine["cursorBefore"] == "1" and mine["cursor"] == "2"
    assert mine["cursors"] == {}  # see docs/protocol.md: the original client trusts them
