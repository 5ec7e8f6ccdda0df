"""Pull (k-way merge, folding, hasMore, cursors) and clone (paging by id, cursors)."""

from __future__ import annotations

from .conftest import Api, MakeApi, mutation


async def test_pull_folds_changes_per_id(api: Api) -> None:
    await api.push(
        mutation("insert", "a", {"title": "a"}),
        mutation("merge", "a", {"done": True}),
        mutation("insert", "b", {"title": "b"}),
        mutation("insert", "n", {"body": "x"}, resource="notes"),
    )
    await api.push(mutation("merge", "b", {"rank": 3}), mutation("delete", "n", resource="notes"))
    full = await api.pull({"todos": "0", "notes": "0"})
    assert full["records"] == {
        "todos": [
            {"id": "a", "title": "a", "done": True},
            {"id": "b", "title": "b", "done": False, "rank": 3},
        ]
    }
    assert full["merged"] == {} and full["deleted"] == {"notes": ["n"]}
    assert full["cursors"] == {"todos": "5", "notes": "6"} and full["hasMore"] is False
    delta = await api.pull({"todos": "3", "notes": "6"})
    assert delta["records"] == {} and delta["merged"] == {"todos": [{"id": "b", "rank": 3}]}
    assert delta["cursors"] == {"todos": "5", "notes": "6"}


async def test_pull_pages_in_seq_order_with_has_more(api: Api) -> None:
    for i in range(10):
        resource = "todos" if i % 2 else "notes"
        record = {"title": str(i)} if resource == "todos" else {"body": str(i)}
        await api.push(mutation("insert", f"r{i}", record, resource=resource))
    cursors = {"todos": "0", "notes": "0"}
    seen = []
    pages = 0
    while True:
        page = await api.pull(cursors, limit=3)
        pages += 1
        for resource in ("todos", "notes"):
            seen += [r["id"] for r in page["records"].get(resource, [])]
        for resource, value in page["cursors"].items():
            assert int(value) >= int(cursors[resource])
        cursors = page["cursors"]
        if not page["hasMore"]:
            break
    assert pages == 4 and sorted(seen) == sorted(f"r{i}" for i in range(10))
    assert cursors == {"todos": "10", "notes": "9"}


async def test_pull_limit_is_capped(make_api: MakeApi) -> None:
    async with make_api(server={"limits": {"max_pull_limit": 2}}) as api:
        await api.push(*(mutation("insert", f"t{i}", {"title": "x"}) for i in range(5)))
        page = await api.pull({"todos": "0"}, limit=100)
        assert len(page["records"]["todos"]) == 2 and page["hasMore"] is True


async def test_pull_with_nothing_new_returns_the_request_cursors(api: Api) -> None:
    assert await api.pull({"todos": "7", "notes": "0"}) == {
        "ok": True,
        "records": {},
        "merged": {},
        "deleted": {},
        "cursors": {"todos": "7", "notes": "0"},
        "hasMore": False,
    }


async def test_clone_pages_by_id(api: Api) -> None:
    ids = [f"t{i:02d}" for i in range(25)]
    await api.push(*(mutation("insert", i, {"title": i}) for i in reversed(ids)))
    after = None
    got: list[str] = []
    while True:
        page = await api.ok(
            "clone", {"clientId": "c", "page": {"table": "todos", "afterId": after, "limit": 10}}
        )
        assert page["cursors"] == {"todos": "25"}
        got += [r["id"] for r in page["data"]["todos"]]
        after = page["next"]["todos"]
        if after is None:
            break
    assert got == ids


async def test_clone_page_limit_is_capped(make_api: MakeApi) -> None:
    async with make_api(server={"limits": {"max_clone_page": 3}}) as api:
        await api.push(*(mutation("insert", f"t{i}", {"title": "x"}) for i in range(5)))
        page = await api.ok("clone", {"clientId": "c", "page": {"table": "todos", "limit": 1000}})
        assert len(page["data"]["todos"]) == 3 and page["next"] == {"todos": "t2"}


async def test_an_unpaged_clone_answers_every_record_or_an_error_never_part(
    make_api: MakeApi,
) -> None:
    async with make_api(server={"limits": {"max_clone_records": 6, "max_clone_page": 3}}) as api:
        await api.push(*(mutation("insert", f"t{i}", {"title": "x"}) for i in range(5)))
        await api.push(mutation("insert", "n", {"body": "x"}, resource="notes"))
        # more records than a page: all of them, no `next` (clients asking this way ignore it)
        result = await api.ok("clone", {"clientId": "c", "tables": ["todos", "notes"]})
        assert [r["id"] for r in result["data"]["todos"]] == [f"t{i}" for i in range(5)]
        assert result["data"]["notes"] == [{"id": "n", "body": "x"}]
        assert "next" not in result and "paginated" not in result
        assert result["cursors"] == {"todos": "5", "notes": "6"}
        await api.push(mutation("insert", "t9", {"title": "x"}))
        error = await api.error(
            "clone", {"clientId": "c"}, status=400, code="LIMIT_EXCEEDED"
        )  # over max-clone-records: refused whole, never truncated
        assert error["details"]["path"] == "page"
        paged = await api.ok("clone", {"clientId": "c", "page": {"table": "todos", "limit": 3}})
        assert paged["next"] == {"todos": "t2"}


async def test_clone_without_tables_skips_remote_only_resources(api: Api) -> None:
    result = await api.ok("clone", {"clientId": "c"})
    assert set(result["data"]) == {"todos", "notes", "kv"}
    assert result["cursors"] == {"todos": "0", "notes": "0", "kv": "0"}
