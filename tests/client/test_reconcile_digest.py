"""Reconcile by content: a record that drifted at an equal count is found by the digest form
of reconcile and repaired, fetching only its id range; peers that only know counts still work.

The server is the real ASGI app in-process (tests.client.real_server); the local copy is
damaged "behind the client's back" by writing into its store directly (no changelog entry, no
cursor change), as a bug or a restored backup would.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from datafn import Client, TransportError
from datafn.builtins.client_http import HttpTransport
from datafn.client.store import PullPage
from datafn.digest import CAPABILITY, FETCH_LEAF
from tests.client.conftest import SCHEMA, hosted
from tests.client.real_server import REMOTE, Server, serving

RECORDS = 2000  # more than FETCH_LEAF * DEFAULT_PARTS: the root is split twice


def _todo(i: int, title: str | None = None) -> dict[str, Any]:
    return {"id": f"t{i:05d}", "title": title or f"todo {i}", "done": i % 2 == 0}


@contextlib.asynccontextmanager
async def seeded(store_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    """The real server holding RECORDS todos (entered and left in the test's own task)."""
    async with serving(store_url, tmp_path) as found:
        await found.store.seed("datafn", {"todos": [_todo(i) for i in range(RECORDS)]})
        yield found


class _Counting(httpx.AsyncBaseTransport):
    """The way to the server, counting the records its answers carry (clone, pull, fetch)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.records = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        content = await response.aread()
        result = orjson.loads(content).get("result") or {}
        for rows in (result.get("data") or {}).values():  # clone
            self.records += len(rows)
        for key in ("records", "merged"):  # pull
            self.records += sum(len(rows) for rows in (result.get(key) or {}).values())
        for fetched in (result.get("fetch") or {}).get("ranges", []):
            self.records += len(fetched["records"])
        return httpx.Response(response.status_code, content=content, headers=response.headers)


def _client(server: Server, tmp_path: Path, transport: httpx.AsyncBaseTransport) -> Client:
    store = "memory://" if server.store_url == "memory://" else f"sqlite:///{tmp_path}/x.db"
    return Client(
        store=store,
        schema=SCHEMA,
        client_id="x",
        transport=HttpTransport(REMOTE, transport=transport),
        use_env=False,
    )


async def test_a_record_changed_at_an_equal_count_is_found_and_only_its_range_fetched(
    store_url: str,
    tmp_path: Path,
) -> None:
    async with seeded(store_url, tmp_path) as server:
        counting = _Counting(server.network)
        async with hosted(_client(server, tmp_path, counting)) as x:
            await x.sync.clone()
            assert counting.records == RECORDS
            # damaged behind the client's back: same count, other content, no changelog entry
            await x.store.apply_pull(PullPage(records={"todos": [_todo(1234, "drifted")]}))
            assert await x.store.count("todos") == RECORDS
            counting.records = 0
            report = await x.sync.reconcile(["todos"])
            assert report.method == "digest"
            assert report.recloned == []
            assert report.repaired == {"todos": 1}
            # only the differing range came back, not the resource
            assert 1 <= counting.records == report.fetched["todos"] <= FETCH_LEAF
            assert (await x.table("todos").get("t01234")) == await server.record("t01234")
            # a second reconcile finds nothing: one request, nothing fetched
            counting.records = 0
            again = await x.sync.reconcile(["todos"])
            assert again.repaired == {"todos": 0}
            assert again.fetched == {"todos": 0}
            assert again.requests == 1
            assert counting.records == 0


async def test_a_lost_record_and_a_stray_one_at_an_equal_count_are_both_repaired(
    store_url: str,
    tmp_path: Path,
) -> None:
    async with seeded(store_url, tmp_path) as server, hosted(server.client("x")) as x:
        await x.sync.clone()
        stray = {"id": "t00500x", "title": "only here", "done": False}
        await x.store.apply_pull(
            PullPage(records={"todos": [stray]}, deleted={"todos": ["t01500"]})
        )
        assert await x.store.count("todos") == RECORDS
        report = await x.sync.reconcile(["todos"])
        assert report.repaired == {"todos": 2}
        assert await x.table("todos").get("t00500x") is None
        assert await x.table("todos").get("t01500") == await server.record("t01500")
        assert report.fetched["todos"] <= 2 * FETCH_LEAF


async def test_many_scattered_differences_are_all_repaired(store_url: str, tmp_path: Path) -> None:
    async with seeded(store_url, tmp_path) as server, hosted(server.client("x")) as x:
        await x.sync.clone()
        damaged = [_todo(i, "drifted") for i in range(3, RECORDS, 37)]
        await x.store.apply_pull(
            PullPage(records={"todos": damaged}, deleted={"todos": ["t00001", "t01999"]})
        )
        report = await x.sync.reconcile(["todos"])
        assert report.repaired == {"todos": len(damaged) + 2}
        assert report.fetched["todos"] < RECORDS // 2
        local = await x.store.records_after("todos", None, RECORDS + 1)
        server_rows = await server.store.clone_page("datafn", "todos", None, RECORDS + 1)
        assert local == list(server_rows)


async def test_records_with_queued_writes_are_compared_as_the_server_should_hold_them(
    store_url: str,
    tmp_path: Path,
) -> None:
    async with seeded(store_url, tmp_path) as server, hosted(server.client("x")) as x:
        await x.sync.clone()
        await x.table("todos").merge({"id": "t00003", "title": "mine, not pushed yet"})
        await x.table("todos").insert({"id": "t00003a", "title": "new, not pushed yet"})
        rows, last = await x.store.synced_records_between("todos", "t00002", "t00004", 10)
        assert last is None
        assert [r["id"] for r in rows] == ["t00003", "t00004"]  # the unpushed insert is not
        assert rows[0] == await server.record("t00003")  # the base, not the local view
        # the reconcile pushes the queued writes first; then nothing differs
        report = await x.sync.reconcile(["todos"])
        assert report.repaired == {"todos": 0}
        assert (await x.table("todos").get("t00003"))["title"] == "mine, not pushed yet"  # type: ignore[index]


async def test_range_reads_page_and_stop_at_the_range_end(store_url: str, tmp_path: Path) -> None:
    async with seeded(store_url, tmp_path) as server, hosted(server.client("x")) as x:
        await x.sync.clone()
        rows, last = await x.store.synced_records_between("todos", None, "t00009", 4)
        assert [r["id"] for r in rows] == ["t00000", "t00001", "t00002", "t00003"]
        assert last == "t00003"
        rows, last = await x.store.synced_records_between("todos", "t00007", "t00009", 4)
        assert [r["id"] for r in rows] == ["t00008", "t00009"]
        assert last is None
        rows, last = await x.store.synced_records_between("todos", "t01997", None, 4)
        assert [r["id"] for r in rows] == ["t01998", "t01999"]
        assert last is None


async def test_a_server_without_the_capability_is_reconciled_by_counts(
    store_url: str, tmp_path: Path
) -> None:
    async with seeded(store_url, tmp_path) as server:
        service = server.app.state.datafn.service
        status = service.status

        def older_status() -> dict[str, Any]:
            answer = status()
            answer["capabilities"] = [c for c in answer["capabilities"] if c != CAPABILITY]
            return answer

        service.status = older_status
        async with hosted(server.client("x")) as x:
            await x.sync.clone()
            await x.store.apply_pull(PullPage(deleted={"todos": ["t00042"]}))
            server.network.requests.clear()
            report = await x.sync.reconcile(["todos"])
            assert report.method == "counts"
            assert report.recloned == ["todos"]
            assert await x.table("todos").get("t00042") == await server.record("t00042")
            sent = [p for e, p in server.network.requests if e == "reconcile"]
            assert sent and all("resources" in p and "digest" not in p for p in sent)


async def test_the_count_form_is_still_answered(store_url: str, tmp_path: Path) -> None:
    async with (
        seeded(store_url, tmp_path) as server,
        httpx.AsyncClient(transport=server.network, base_url="http://datafn.test/datafn") as http,
    ):
        status = (await http.get("/status")).json()["result"]
        assert CAPABILITY in status["capabilities"]
        answer = await http.post("/reconcile", json={"clientId": "ts", "resources": ["todos"]})
        assert answer.status_code == 200
        assert answer.json() == {
            "ok": True,
            "result": {"ok": True, "counts": {"todos": RECORDS}},
        }


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"digest": {"resource": "todos", "ranges": []}}, "digest.ranges"),
        ({"digest": {"resource": "todos", "ranges": [{}] * 65}}, "digest.ranges"),
        ({"digest": {"resource": "todos", "ranges": [{}], "parts": 65}}, "digest.parts"),
        (
            {"digest": {"resource": "todos", "ranges": [{"until": "b"}, {"after": "a"}]}},
            "digest.ranges[1].after",
        ),
        ({"digest": {"resource": "todos", "ranges": [{"after": "b", "until": "a"}]}}, None),
        ({"fetch": {"resource": "nope", "ranges": [{}]}}, "fetch.resource"),
        ({"fetch": {"resource": "audit", "ranges": [{}]}}, "fetch.resource"),
        ({"digest": {"resource": "todos", "ranges": [{}]}, "fetch": {}}, None),
        # range bounds are ids: no NUL (PostgreSQL text holds none), the id length limit
        (
            {"digest": {"resource": "todos", "ranges": [{"until": "a\x00"}]}},
            "digest.ranges[0].until",
        ),
        (
            {"digest": {"resource": "todos", "ranges": [{"until": "a"}, {"after": "b\x00"}]}},
            "digest.ranges[1].after",
        ),
        ({"fetch": {"resource": "todos", "ranges": [{"after": "\x00"}]}}, "fetch.ranges[0].after"),
        (
            {"fetch": {"resource": "todos", "ranges": [{"until": "z" * 256}]}},
            "fetch.ranges[0].until",
        ),
    ],
)
async def test_digest_requests_are_bounded_and_validated(
    store_url: str, tmp_path: Path, body: dict[str, Any], path: str | None
) -> None:
    async with seeded(store_url, tmp_path) as server:
        async with httpx.AsyncClient(
            transport=server.network, base_url="http://datafn.test/datafn"
        ) as http:
            answer = await http.post("/reconcile", json={"clientId": "ts", **body})
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["code"] in ("DFQL_INVALID", "DFQL_UNKNOWN_RESOURCE", "LIMIT_EXCEEDED")
        if path is not None:
            assert error["details"]["path"] == path


async def test_a_fetch_answer_is_bounded_and_says_where_it_stopped(
    store_url: str, tmp_path: Path
) -> None:
    async with seeded(store_url, tmp_path) as server:
        async with httpx.AsyncClient(
            transport=server.network, base_url="http://datafn.test/datafn"
        ) as http:
            answer = await http.post(
                "/reconcile",
                json={"clientId": "ts", "fetch": {"resource": "todos", "ranges": [{}]}},
            )
        fetched = orjson.loads(answer.content)["result"]["fetch"]
        (whole,) = fetched["ranges"]
        assert whole["complete"] is False
        assert len(whole["records"]) == 1000  # max-clone-page
        assert fetched["cursor"] == str(RECORDS)


class _ReversedParts(httpx.AsyncBaseTransport):
    """A server whose digest answers list their parts backwards."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not request.url.path.endswith("/reconcile"):
            return response
        body = orjson.loads(await response.aread())
        for answered in body["result"].get("digest", {}).get("ranges", []):
            answered["parts"].reverse()
        return httpx.Response(response.status_code, json=body)


async def test_a_malformed_digest_answer_is_refused(store_url: str, tmp_path: Path) -> None:
    async with seeded(store_url, tmp_path) as server:
        broken = _ReversedParts(server.network)
        async with hosted(_client(server, tmp_path, broken)) as x:
            await x.sync.clone()
            await x.store.apply_pull(PullPage(records={"todos": [_todo(5, "drifted")]}))
            with pytest.raises(TransportError, match="malformed digest"):
                await x.sync.reconcile(["todos"])
            assert (await x.table("todos").get("t00005"))["title"] == "drifted"  # type: ignore[index]
