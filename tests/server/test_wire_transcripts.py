"""Wire transcripts of the original TypeScript DataFn client against this server.

Each test sends a request exactly as the original client's sync engine builds it (the function
it comes from is named in the test) and asserts every field that client reads from the answer,
with its type. The client checks ``response.ok && response.result.ok`` before it applies
anything, so every result carries ``"ok": true``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from datafn import Client
from datafn.builtins.client_http import HttpTransport
from tests.client.conftest import hosted
from tests.server.conftest import SCHEMA, Api, MakeApi, mutation

#: The original client's resources: every resource that is not remote-only, plus the
#: built-in kv (``ensureBuiltinKv``), in schema order.
TABLES = ["todos", "notes", "kv"]

#: The extra cursor keys of ``buildPullCursors``: a many-many join store and the actor feed.
JOIN_KEY = "join_todos_related_notes"
FEED_KEY = "__datafn_actor_feed__"


def ts_mutation(op: str, record_id: str, record: Any = None, **kw: Any) -> dict[str, Any]:
    """A changelog mutation as ``processPush`` sends it (the TS engine's field order)."""
    out = {
        "resource": kw.pop("resource", "todos"),
        "version": 1,
        "operation": op,
        "id": record_id,
        "clientId": kw.pop("client_id", "ts-client"),
        "mutationId": kw.pop("mid", f"ts:{op}:{record_id}"),
    }
    if record is not None:
        out["record"] = {"id": record_id, **record}
    return out


async def ts_push(api: Api, *mutations: dict[str, Any]) -> dict[str, Any]:
    """``pushWithRetries``: ``{clientId, mutations}``; the engine reads ``response.ok``,
    ``result.ok``, ``applied``, ``errors[].retryable``, ``cursor``, ``cursorBefore`` and
    ``cursors``."""
    response = await api.call("push", {"clientId": "ts-client", "mutations": list(mutations)})
    envelope = response.json()
    assert response.status_code == 200 and envelope["ok"] is True, envelope
    result = envelope["result"]
    assert isinstance(result["ok"], bool)
    assert isinstance(result["applied"], list) and isinstance(result["errors"], list)
    assert isinstance(result["cursor"], str) and result["cursor"].isdigit()
    assert isinstance(result["cursorBefore"], str) and result["cursorBefore"].isdigit()
    assert isinstance(result["cursors"], dict)
    return result  # type: ignore[no-any-return]


def ack_through(entries: list[dict[str, Any]], result: dict[str, Any]) -> int:
    """What ``computeAckThroughSeq`` acknowledges: the prefix applied or refused for good."""
    if result["ok"]:
        return len(entries)
    errors = {e["mutationId"]: e for e in result["errors"]}
    count = 0
    for entry in entries:
        mid = entry["mutationId"]
        if mid in result["applied"] or errors.get(mid, {}).get("retryable") is False:
            count += 1
            continue
        break
    return count


def pull_cursors(**cursors: str) -> dict[str, str]:
    """``buildPullCursors``: every local resource, the join stores, the actor feed."""
    out = dict.fromkeys(TABLES, "0")
    out[JOIN_KEY] = "0"
    out[FEED_KEY] = "0"
    out.update(cursors)
    return out


async def test_status_answers_what_the_client_reads(api: Api) -> None:
    result = await api.ok("status")
    assert result["schemaHash"].startswith("sha256:")
    assert {"sync.clone", "sync.pull", "sync.push", "sync.reconcile"} <= set(result["capabilities"])
    assert isinstance(result["serverTimeMs"], int)


async def test_clone_unpaged_as_clone_resources_sends_it(make_api: MakeApi) -> None:
    """``cloneResources`` (default page size 1000: one request, ``next`` ignored)."""
    async with make_api(server={"limits": {"max_clone_page": 2}}) as api:
        await ts_push(api, *(ts_mutation("insert", f"t{i}", {"title": str(i)}) for i in range(5)))
        response = await api.call(
            "clone", {"clientId": "ts-client", "tables": TABLES, "includeJoins": True}
        )
        envelope = response.json()
        assert response.status_code == 200 and envelope["ok"] is True
        result = envelope["result"]
        assert result["ok"] is True
        assert set(result["data"]) == set(TABLES)  # applyCloneResult marks each one ready
        # every record although pages are 2 here: the engine never asks for more
        assert [r["id"] for r in result["data"]["todos"]] == [f"t{i}" for i in range(5)]
        assert all(isinstance(r, dict) for r in result["data"]["todos"])
        assert result["cursors"] == {"todos": "5", "notes": "0", "kv": "0"}
        assert "paginated" not in result and "next" not in result


async def test_clone_paged_as_clone_table_paginated_sends_it(api: Api) -> None:
    await ts_push(api, *(ts_mutation("insert", f"t{i}", {"title": str(i)}) for i in range(3)))
    seen: list[str] = []
    after: str | None = None
    while True:
        result = await api.ok(
            "clone",
            {
                "clientId": "ts-client",
                "tables": ["todos"],
                "page": {"table": "todos", "afterId": after, "limit": 2},
                "includeJoins": True,
            },
        )
        assert result["ok"] is True and isinstance(result["cursors"]["todos"], str)
        seen += [r["id"] for r in result["data"]["todos"]]
        after = result["next"]["todos"]
        if after is None:
            break
        assert isinstance(after, str)
    assert seen == ["t0", "t1", "t2"]


async def test_pull_as_pull_with_per_table_cursors_sends_it(api: Api) -> None:
    await ts_push(
        api,
        ts_mutation("insert", "t1", {"title": "a"}),
        ts_mutation("merge", "t1", {"done": True}, mid="m2"),
        ts_mutation("insert", "n1", {"body": "x"}, resource="notes"),
        ts_mutation("delete", "n1", resource="notes", mid="d1"),
    )
    sent = pull_cursors(kv="0", **{FEED_KEY: "3", JOIN_KEY: "2"})
    result = await api.ok(
        "pull", {"clientId": "ts-client", "cursors": sent, "limit": 200, "includeJoins": True}
    )
    assert result["ok"] is True and result["hasMore"] is False
    assert result["records"] == {"todos": [{"id": "t1", "title": "a", "done": True}]}
    assert result["deleted"] == {"notes": ["n1"]}  # always an object: the client iterates it
    assert isinstance(result["merged"], dict)
    # every key comes back, never below what was sent (the client refuses a regression)
    assert set(result["cursors"]) == set(sent)
    assert result["cursors"][FEED_KEY] == "3" and result["cursors"][JOIN_KEY] == "2"
    assert result["cursors"]["todos"] == "2" and result["cursors"]["notes"] == "4"
    assert all(int(result["cursors"][k]) >= int(v) for k, v in sent.items())


async def test_the_global_cursor_pull_of_clone_up_pull_after(api: Api) -> None:
    """``cloneUp``'s ``pullAfter``: ``{clientId, cursor, limit: 100}`` until
    ``nextCursor`` is null."""
    await ts_push(
        api,
        ts_mutation("insert", "t1", {"title": "a"}),
        ts_mutation("merge", "t1", {"done": True}, mid="m2"),
        ts_mutation("delete", "t1", mid="d1"),
        ts_mutation("insert", "n1", {"body": "x"}, resource="notes"),
    )
    cursor = "0"
    changes: list[dict[str, Any]] = []
    for _ in range(10):
        result = await api.ok("pull", {"clientId": "ts-client", "cursor": cursor, "limit": 3})
        assert result["ok"] is True
        changes += result["changes"]
        if result["nextCursor"] is None:
            break
        assert isinstance(result["nextCursor"], str)
        cursor = result["nextCursor"]
    assert [(c["serverSeq"], c["resource"], c["id"], c["op"]) for c in changes] == [
        (1, "todos", "t1", "upsert"),
        (2, "todos", "t1", "upsert"),
        (3, "todos", "t1", "delete"),
        (4, "notes", "n1", "upsert"),
    ]
    assert changes[0]["record"] == {"id": "t1", "title": "a", "done": False}
    assert changes[1]["record"] == {"id": "t1", "done": True}  # a merge: its delta
    assert changes[2]["record"] is None
    assert all(isinstance(c["serverSeq"], int) for c in changes)


async def test_push_answer_and_what_the_engine_acknowledges(api: Api) -> None:
    """``processPush`` / ``computeAckThroughSeq``: one write the server cannot perform never
    blocks the batch; ``cursors`` is empty so that the engine does not move its per-resource
    cursors over another client's change committed just before this push."""
    await api.push(
        mutation("insert", "other", {"title": "from another client"}, client_id="x"), client_id="x"
    )
    batch = [
        ts_mutation("insert", "t1", {"title": "a"}),
        {**ts_mutation("trash", "t1"), "mid": None, "mutationId": "ts:trash:t1"},
        ts_mutation("relate", "t1", mid="ts:relate:t1"),
        ts_mutation("merge", "t1", {"done": True}, mid="ts:merge:t1"),
    ]
    for entry in batch:
        entry.pop("mid", None)
    result = await ts_push(api, *batch)
    assert result["ok"] is False
    assert result["applied"] == ["ts:insert:t1", "ts:merge:t1"]
    assert [(e["mutationId"], e["code"], e["retryable"]) for e in result["errors"]] == [
        ("ts:trash:t1", "DFQL_UNSUPPORTED", False),
        ("ts:relate:t1", "DFQL_UNSUPPORTED", False),
    ]
    assert all(e["path"].endswith(".operation") for e in result["errors"])
    assert ack_through(batch, result) == 4  # the whole batch leaves the TS queue
    assert result["cursors"] == {}
    assert (result["cursorBefore"], result["cursor"]) == ("1", "3")


async def test_an_insert_that_conflicts_on_id_is_not_retried_forever(api: Api) -> None:
    await api.push(
        mutation("insert", "t1", {"title": "someone else's"}, client_id="x"), client_id="x"
    )
    batch = [
        ts_mutation("insert", "t1", {"title": "mine"}),
        ts_mutation("insert", "t2", {"title": "b"}),
    ]
    result = await ts_push(api, *batch)
    (error,) = result["errors"]
    assert (error["code"], error["path"], error["retryable"]) == ("CONFLICT", "id", False)
    assert ack_through(batch, result) == 2  # see docs/protocol.md: retryable false on purpose


async def test_reconcile_as_reconcile_now_sends_it(api: Api) -> None:
    await ts_push(api, ts_mutation("insert", "t1", {"title": "a"}))
    result = await api.ok(
        "reconcile", {"clientId": "ts-client", "resources": TABLES, "includeJoins": True}
    )
    assert result["ok"] is True
    assert result["counts"] == {"todos": 1, "notes": 0, "kv": 0}


async def test_seed_in_the_original_form(api: Api) -> None:
    result = await api.ok("seed", {"clientId": "ts-client", "timestamp": 0})
    assert result["ok"] is True
    assert (await api.ok("reconcile", {"clientId": "c", "resources": ["todos"]}))["counts"] == {
        "todos": 0
    }
    result = await api.ok("seed", {"data": {"todos": [{"id": "s1", "title": "seeded"}]}})
    assert result == {"ok": True, "inserted": {"todos": 1}}


async def test_the_builtin_kv_resource_syncs(api: Api) -> None:
    value = {"theme": "dark", "sizes": [1, 2]}
    result = await ts_push(
        api, ts_mutation("insert", "kv:settings", {"value": value}, resource="kv")
    )
    assert result["ok"] is True
    clone = await api.ok("clone", {"clientId": "ts-client", "tables": ["kv"]})
    assert clone["data"]["kv"] == [{"id": "kv:settings", "value": value}]


# -- the Python client and a TypeScript-shaped client on one server -----------------------


@pytest.fixture
async def shared(make_api: MakeApi, tmp_path: Path) -> AsyncIterator[tuple[Api, Client]]:
    async with make_api() as api:
        transport = HttpTransport("http://testserver/datafn", transport=api.http._transport)
        client = Client(
            schema=SCHEMA,
            store=f"sqlite:///{tmp_path}/py.db",
            client_id="py-client",
            transport=transport,
            use_env=False,
        )
        async with hosted(client):
            yield api, client


async def test_python_and_typescript_clients_converge_both_ways(
    shared: tuple[Api, Client],
) -> None:
    api, py = shared
    await py.sync.sync_all()
    await py.table("todos").insert({"id": "py1", "title": "from python"})
    await py.table("kv").insert({"id": "kv:lang", "value": "python"})
    await py.sync.push()
    # the TS engine: clone, then a write of its own, then pulls
    clone = await api.ok("clone", {"clientId": "ts-client", "tables": TABLES, "includeJoins": True})
    ts_records = {t: {r["id"]: r for r in rows} for t, rows in clone["data"].items()}
    ts_cursors = pull_cursors(**clone["cursors"])
    await ts_push(
        api,
        ts_mutation("merge", "py1", {"done": True}),
        ts_mutation("insert", "ts1", {"title": "from typescript"}),
    )
    pulled = await api.ok(
        "pull", {"clientId": "ts-client", "cursors": ts_cursors, "limit": 200, "includeJoins": True}
    )
    for table, rows in pulled["records"].items():
        for row in rows:
            ts_records[table][row["id"]] = row
    for table, rows in pulled.get("merged", {}).items():
        for row in rows:
            ts_records[table][row["id"]] = {**ts_records[table].get(row["id"], {}), **row}
    await py.sync.pull()
    for table in ("todos", "kv"):
        py_rows = {r["id"]: r for r in await py.table(table).query()}
        assert py_rows == ts_records[table]
    assert ts_records["todos"]["py1"]["done"] is True
    assert ts_records["kv"]["kv:lang"]["value"] == "python"


async def test_an_unpaged_clone_of_more_than_ten_thousand_records_is_whole(api: Api) -> None:
    """``cloneResources`` with the default page size: one request, ``next`` ignored; above
    the original's 10 000 the answer still holds every record."""
    total = 10_001
    for start in range(0, total, 500):
        await ts_push(
            api,
            *(
                ts_mutation("insert", f"t{i:05}", {"title": "x"})
                for i in range(start, min(start + 500, total))
            ),
        )
    result = await api.ok(
        "clone", {"clientId": "ts-client", "tables": TABLES, "includeJoins": True}
    )
    assert result["ok"] is True and len(result["data"]["todos"]) == total
    assert result["cursors"]["todos"] == str(total)
