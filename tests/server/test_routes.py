"""The routes, the envelope, error statuses and the order of checks (in process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from datafn.context import Identity
from datafn.errors import ProtocolError
from datafn.plugin import hookimpl
from datafn.protocol import (
    CAPABILITIES,
    CloneResult,
    PullResult,
    PushResult,
    ReconcileResult,
    SeedResult,
    StatusResult,
    parse_envelope,
)
from datafn.schema import load_schema

from .conftest import SCHEMA, Api, MakeApi, mutation


async def test_status_announces_schema_hash_capabilities_and_limits(api: Api) -> None:
    response = await api.call("status")
    status = parse_envelope(response.json(), StatusResult)
    assert status.schema_hash == load_schema(SCHEMA).hash
    assert status.schema_hash.startswith("sha256:")
    assert set(CAPABILITIES) <= set(status.capabilities)
    assert status.limits["maxBatchSize"] == 500
    assert status.limits["maxBodyBytes"] == 5 * 1024 * 1024
    assert status.server_time_ms > 1_600_000_000_000
    assert response.headers["content-type"] == "application/json"


async def test_every_result_parses_as_its_wire_model(api: Api) -> None:
    pushed = await api.push(mutation("insert", "t1", {"title": "a"}))
    PushResult.from_wire(pushed)
    PullResult.from_wire(await api.pull({"todos": "0"}))
    CloneResult.from_wire(await api.ok("clone", {"clientId": "c1"}))
    ReconcileResult.from_wire(await api.ok("reconcile", {"clientId": "c1", "resources": ["todos"]}))
    SeedResult.from_wire(await api.ok("seed", {"data": {"notes": [{"id": "n1", "body": "x"}]}}))


@pytest.mark.parametrize("body", [b"", b"{", b"[1,", b"nope", b"\xff\xfe", b'{"a": NaN}'])
async def test_unparsable_json_is_400_invalid_json(api: Api, body: bytes) -> None:
    response = await api.http.post("/datafn/pull", content=body)
    assert response.status_code == 400
    assert response.json() == {
        "ok": False,
        "error": {"code": "DFQL_INVALID", "message": "Invalid JSON", "details": {"path": "$"}},
    }


@pytest.mark.parametrize("body", [[], 1, "x", None, True])
async def test_a_body_that_is_no_object_is_400(api: Api, body: Any) -> None:
    await api.error("pull", body, status=400, code="DFQL_INVALID")


async def test_unknown_route_and_wrong_method_answer_envelopes(api: Api) -> None:
    response = await api.http.post("/datafn/nope", json={})
    assert response.status_code == 404 and response.json()["error"]["code"] == "NOT_FOUND"
    response = await api.http.get("/datafn/push")
    assert response.status_code == 405 and response.json()["ok"] is False
    assert response.json()["error"]["details"]["path"] == "$"


async def test_missing_client_id_is_dfql_invalid_at_client_id(api: Api) -> None:
    error = await api.error("clone", {}, status=400, code="DFQL_INVALID")
    assert error["details"]["path"] == "clientId"


async def test_clone_unknown_and_remote_only_tables(api: Api) -> None:
    error = await api.error(
        "clone",
        {"clientId": "c", "tables": ["todos", "ghosts"]},
        status=400,
        code="DFQL_UNKNOWN_RESOURCE",
    )
    assert error["details"]["path"] == "tables[1]"
    error = await api.error(
        "clone", {"clientId": "c", "tables": ["audit"]}, status=400, code="DFQL_INVALID"
    )
    assert error["details"]["path"] == "tables[0]"


async def test_pull_of_unknown_resource_names_the_cursor(api: Api) -> None:
    error = await api.error(
        "pull",
        {"clientId": "c", "cursors": {"ghosts": "0"}},
        status=400,
        code="DFQL_UNKNOWN_RESOURCE",
    )
    assert error["details"]["path"] == "cursors.ghosts"
    error = await api.error(
        "pull", {"clientId": "c", "cursors": {"todos": "-1"}}, status=400, code="DFQL_INVALID"
    )
    assert error["details"]["path"] == "cursors.todos"


async def test_reconcile_counts_and_refuses_unknown_resources(api: Api) -> None:
    await api.push(mutation("insert", "a", {"title": "a"}), mutation("insert", "b", {"title": "b"}))
    assert await api.ok("reconcile", {"clientId": "c", "resources": ["todos", "notes"]}) == {
        "ok": True,
        "counts": {"todos": 2, "notes": 0},
    }
    error = await api.error(
        "reconcile",
        {"clientId": "c", "resources": ["x"]},
        status=400,
        code="DFQL_UNKNOWN_RESOURCE",
    )
    assert error["details"]["path"] == "resources[0]"


async def test_seed_inserts_what_is_missing_and_logs_it(api: Api) -> None:
    await api.push(mutation("insert", "t1", {"title": "mine"}))
    result = await api.ok(
        "seed",
        {"data": {"todos": [{"id": "t1", "title": "seeded"}, {"id": "t2", "title": "new"}]}},
    )
    assert result == {"ok": True, "inserted": {"todos": 1}}
    pulled = await api.pull({"todos": "1"})
    assert pulled["records"]["todos"] == [{"id": "t2", "title": "new", "done": False}]
    assert pulled["cursors"] == {"todos": "2"}
    clone = await api.ok("clone", {"clientId": "c", "tables": ["todos"]})
    assert [r["title"] for r in clone["data"]["todos"]] == ["mine", "new"]


async def test_seed_refuses_invalid_records_without_writing(api: Api) -> None:
    error = await api.error(
        "seed",
        {"data": {"todos": [{"id": "ok", "title": "fine"}, {"id": "bad", "title": 3}]}},
        status=400,
        code="DFQL_INVALID",
    )
    assert error["details"]["path"] == "data.todos[1].title"
    assert (await api.ok("reconcile", {"clientId": "c", "resources": ["todos"]}))["counts"] == {
        "todos": 0
    }


async def test_seed_without_ids_generates_prefixed_ids(api: Api) -> None:
    await api.ok("seed", {"data": {"todos": [{"title": "x"}]}})
    clone = await api.ok("clone", {"clientId": "c", "tables": ["todos"]})
    assert clone["data"]["todos"][0]["id"].startswith("todo:")


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def datafn_authenticate(self, headers: dict[str, str], action: str) -> Identity | None:
        self.calls.append(f"authenticate:{action}")
        if headers.get("x-user") == "nobody":
            raise ProtocolError("who are you", code="FORBIDDEN", http_status=401)
        return Identity(headers.get("x-user", "anon"))

    @hookimpl
    def datafn_authorize(self, context: Any, action: str, payload: Any) -> bool:
        self.calls.append(f"authorize:{action}")
        return context.identity.subject != "mallory"


async def test_order_of_checks(make_api: MakeApi) -> None:
    recorder = _Recorder()
    async with make_api(plugins=(recorder,), server={"limits": {"max_body_bytes": 2048}}) as api:
        big = b'{"clientId": "' + b"x" * 4096 + b'"}'
        # body size before JSON parse and authentication
        response = await api.http.post("/datafn/pull", content=big, headers={"x-user": "nobody"})
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "LIMIT_EXCEEDED"
        # JSON parse before authentication
        response = await api.http.post("/datafn/pull", content=b"{", headers={"x-user": "nobody"})
        assert response.status_code == 400
        assert recorder.calls == []
        # authentication before authorize and validation
        await api.error(
            "pull", {"bad": 1}, status=401, code="FORBIDDEN", headers={"x-user": "nobody"}
        )
        assert recorder.calls == ["authenticate:pull"]
        # authorize before validation
        await api.error(
            "pull", {"bad": 1}, status=403, code="FORBIDDEN", headers={"x-user": "mallory"}
        )
        # validation after both
        await api.error(
            "pull", {"bad": 1}, status=400, code="DFQL_INVALID", headers={"x-user": "al"}
        )
        # shutdown before everything
        api.server.begin_shutdown()
        response = await api.http.post("/datafn/pull", content=big)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"


async def test_body_size_is_checked_on_the_bytes_read_too(make_api: MakeApi) -> None:
    async with make_api(server={"limits": {"max_body_bytes": 1024}}) as api:

        async def chunks() -> Any:
            for _ in range(8):
                yield b" " * 512

        response = await api.http.post("/datafn/pull", content=chunks())
        assert response.status_code == 413
        assert response.json()["error"]["details"]["path"] == "$"


async def test_rate_limit_answers_429(make_api: MakeApi) -> None:
    async with make_api(server={"limits": {"rate_limit_per_second": 2}}) as api:
        statuses = [(await api.call("status")).status_code for _ in range(5)]
        assert statuses[:2] == [200, 200] and 429 in statuses
        response = await api.call("status")
        assert response.json()["error"]["code"] == "LIMIT_EXCEEDED"


class _Broken:
    @hookimpl
    def datafn_authorize(self, context: Any, action: str, payload: Any) -> bool:
        raise RuntimeError("secret internals")


async def test_a_failing_authorize_denies(make_api: MakeApi) -> None:
    async with make_api(plugins=(_Broken(),)) as api:
        error = await api.error(
            "pull", {"clientId": "c", "cursors": {}}, status=403, code="FORBIDDEN"
        )
        assert "secret" not in error["message"]


async def test_internal_errors_hide_internals_in_production(make_api: MakeApi) -> None:
    for production in (False, True):
        async with make_api(server={"production": production}) as api:

            async def explode(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("db password is hunter2")

            api.server.store.counts = explode
            error = await api.error(
                "reconcile", {"clientId": "c", "resources": ["todos"]}, status=500, code="INTERNAL"
            )
            assert ("hunter2" in error["message"]) is not production
            assert "Traceback" not in error["message"]


async def test_a_cursor_beyond_64_bits_is_a_400_not_a_500(api: Any) -> None:
    response = await api.http.post(
        "/datafn/pull", json={"clientId": "c1", "cursors": {"todos": "9" * 20}}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "DFQL_INVALID"
    assert response.json()["error"]["details"]["path"] == "cursors.todos"


async def test_a_request_in_flight_across_shutdown_never_reopens_the_store() -> None:
    import anyio
    import httpx

    from datafn.runtime import Runtime
    from datafn.server import create_app
    from tests.server.conftest import SCHEMA

    runtime = Runtime.boot(use_env=False, server={"shutdown_timeout": 0.05})
    app = create_app(runtime, schema=SCHEMA, store="memory://")
    server = app.state.datafn
    release = anyio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"clientId": "c", '
        await release.wait()  # the request is past the draining check, its body unread
        yield b'"cursors": {}}'

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        await server.open()
        async with anyio.create_task_group() as tg:
            responses: list[httpx.Response] = []

            async def send() -> None:
                responses.append(await http.post("/datafn/pull", content=slow_body()))

            tg.start_soon(send)
            await anyio.wait_all_tasks_blocked()
            await server.aclose()  # gives up waiting after shutdown-timeout, closes the store
            release.set()
    assert responses[0].status_code == 503
    assert responses[0].json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert not server._opened, "the store was reopened after shutdown"


async def test_cross_origin_calls_are_allowed_for_the_listed_origins_only(
    make_api: MakeApi,
) -> None:
    origin = "https://app.example.com"
    async with make_api(server={"cors_origins": [origin]}) as api:
        preflight = await api.http.options(
            "/datafn/pull",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin
        answer = await api.call(
            "pull", {"clientId": "c", "cursors": {"todos": "0"}}, headers={"Origin": origin}
        )
        assert answer.headers["access-control-allow-origin"] == origin
        other = await api.call(
            "pull", {"clientId": "c", "cursors": {}}, headers={"Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers
    async with make_api() as api:  # the default: same origin only
        answer = await api.call(
            "pull", {"clientId": "c", "cursors": {}}, headers={"Origin": origin}
        )
        assert "access-control-allow-origin" not in answer.headers
