"""Hostile bodies, hostile connections and secrets: what a client cannot make the server do.

Memory is measured with tracemalloc (never with timings); connections are real loopback
sockets against uvicorn, with short injected timeouts and a bound on every wait.
"""

from __future__ import annotations

import logging
import socket
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import anyio
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datafn.errors import ValidationFailed
from datafn.plugin import hookimpl
from datafn.protocol import HelloMessage, PullRequest, parse_ws_message
from datafn.schema import check_json_value
from datafn.server import create_app

from .conftest import SCHEMA, Api, MakeApi, boot, live_server, mutation

# --------------------------------------------------------------------------- amplification


def amplifying_body(key_chars: int, items: int) -> bytes:
    """N list items under a K-character key: the shape that cost N×K bytes to validate."""
    return orjson.dumps({"clientId": "c1", "cursors": {"k" * key_chars: [0] * items}})


@contextmanager
def peak_allocation() -> Iterator[list[int]]:
    """``with peak_allocation() as peak:`` … ``peak[0]`` is the bytes allocated at most."""
    found = [0]
    tracemalloc.start()
    try:
        yield found
    finally:
        found[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def test_validation_allocates_nothing_per_item_for_a_long_key() -> None:
    body = amplifying_body(20_000, 5_000)  # 30 KB; building every path asked for 100 MB
    payload = orjson.loads(body)
    with peak_allocation() as peak:
        check_json_value(payload, path="")
    assert peak[0] < len(body)
    # the same walk still names the place of a refusal
    payload["cursors"]["k" * 20_000].append(float("inf"))
    with pytest.raises(ValidationFailed) as info:
        check_json_value(payload, path="")
    assert info.value.path == f"cursors.{'k' * 20_000}[5000]"


def test_a_hello_costs_a_small_multiple_of_its_size() -> None:
    hello = orjson.dumps(
        {"type": "hello", "clientId": "c", "cursors": {}, "x" * 30_000: [0] * 10_000}
    )  # 50 KB; it used to cost 300 MB
    parse_ws_message(b'{"type": "hello", "clientId": "c"}')  # warm up caches
    with peak_allocation() as peak:
        parsed = parse_ws_message(hello)
    assert isinstance(parsed, HelloMessage)
    assert peak[0] < 4 * len(hello) + 64 * 1024
    decoded = orjson.loads(hello)
    with peak_allocation() as peak:
        HelloMessage.from_wire(decoded)
    assert peak[0] < 4 * len(hello) + 64 * 1024


def test_wire_models_refuse_amplifying_bodies_in_bounded_memory() -> None:
    body = amplifying_body(20_000, 5_000)
    payload = orjson.loads(body)
    with peak_allocation() as peak, pytest.raises(ValidationFailed):
        PullRequest.from_wire(payload)
    assert peak[0] < 4 * len(body) + 64 * 1024


async def test_an_amplifying_body_costs_the_server_a_small_multiple_of_its_size(
    api: Api,
) -> None:
    body = amplifying_body(20_000, 5_000)
    await api.http.post("/datafn/pull", content=b"{}")  # warm up imports and caches
    with peak_allocation() as peak:
        response = await api.http.post("/datafn/pull", content=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "DFQL_INVALID"
    assert peak[0] < 10 * len(body) + 512 * 1024, peak[0]


# --------------------------------------------------------------------------- bounds


def test_counting_json_values_stops_at_the_limit_and_names_the_place() -> None:
    from datafn.server.bounds import count_json_values

    assert count_json_values({"a": [1, 2, {"b": None}], "c": "x"}, limit=10) == 7
    with pytest.raises(ValidationFailed) as info:
        count_json_values({"a": [1, 2, {"b": None}], "c": "x"}, limit=5)
    assert (info.value.code, info.value.path) == ("LIMIT_EXCEEDED", "a[2].b")


async def test_a_body_of_too_many_json_values_is_limit_exceeded(make_api: MakeApi) -> None:
    async with make_api(server={"limits": {"max_body_nodes": 1000}}) as api:
        tags = ["t"] * 2000
        body = {"clientId": "c1", "mutations": [mutation("insert", "t1", {"title": "x"})]}
        body["mutations"][0]["record"]["tags"] = tags
        error = await api.error("push", body, status=400, code="LIMIT_EXCEEDED")
        assert error["details"]["path"].startswith("mutations[0].record.tags[")
        assert "1000" in error["message"]
        body["mutations"][0]["record"]["tags"] = tags[:500]
        assert (await api.push(*body["mutations"]))["applied"] == ["insert-t1"]


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-9, 9) | st.text(max_size=2),
        lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=2), inner),
        max_leaves=60,
    )
)
def test_a_json_text_holds_at_most_half_its_bytes_in_values(value: Any) -> None:
    # why a body shorter than 2 × max-body-nodes bytes is not counted value by value
    from datafn.server.bounds import count_json_values, most_json_values

    text = orjson.dumps(value)
    assert count_json_values(value, limit=10**9) <= most_json_values(len(text))


def test_the_bound_on_values_per_byte_is_tight() -> None:
    from datafn.server.bounds import count_json_values, most_json_values

    for n in (0, 1, 2, 50):
        text = orjson.dumps([1] * n)
        assert count_json_values(orjson.loads(text), limit=10**9) == most_json_values(len(text))


async def test_a_payload_a_plugin_replaces_is_counted_too(make_api: MakeApi) -> None:
    class Inflate:
        @hookimpl
        async def datafn_before_sync(self, phase: str, payload: Any, context: Any) -> Any:
            if phase != "push" or context.side != "server":
                return None
            record = payload["mutations"][0]["record"]
            return {
                **payload,
                "mutations": [
                    {**payload["mutations"][0], "record": {**record, "tags": ["t"] * 2000}}
                ],
            }

    async with make_api(plugins=(Inflate(),), server={"limits": {"max_body_nodes": 1000}}) as api:
        error = await api.error(
            "push",
            {"clientId": "c1", "mutations": [mutation("insert", "t1", {"title": "x"})]},
            status=400,
            code="LIMIT_EXCEEDED",
        )
        assert error["details"]["path"].startswith("mutations[0].record.tags[")


async def test_lists_of_resources_are_bounded_by_the_schema(api: Api) -> None:
    n = len(api.server.schema.resources)
    names = [f"r{i}" for i in range(n + 1)]
    cases = [
        ("reconcile", {"clientId": "c1", "resources": ["todos"] * (n + 1)}, "resources"),
        ("clone", {"clientId": "c1", "tables": ["todos"] * (n + 1)}, "tables"),
        ("pull", {"clientId": "c1", "cursors": dict.fromkeys(names, "0")}, "cursors"),
        ("seed", {"data": {name: [] for name in names}}, "data"),
    ]
    for action, body, path in cases:
        error = await api.error(action, body, status=400, code="LIMIT_EXCEEDED")
        assert error["details"]["path"] == path, action
    assert await api.ok("reconcile", {"clientId": "c1", "resources": ["todos"] * n})


async def test_a_seed_holds_at_most_max_seed_records(make_api: MakeApi) -> None:
    async with make_api(server={"limits": {"max_seed_records": 3}}) as api:
        records = [{"title": str(i)} for i in range(4)]
        body = {"data": {"notes": [], "todos": records}}
        error = await api.error("seed", body, status=400, code="LIMIT_EXCEEDED")
        assert error["details"]["path"] == "data.todos"
        response = await api.call("seed", {"data": {"todos": records[:3]}})
        assert response.status_code == 200, response.text


async def test_large_bodies_are_validated_off_the_event_loop(api: Api) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    validate = api.server.service.validate

    def spy(action: str, payload: Any) -> Any:
        seen.append(threading.get_ident())
        return validate(action, payload)

    api.server.service.validate = spy
    small = mutation("insert", "t1", {"title": "small"})
    large = mutation("insert", "t2", {"title": "large", "tags": ["x" * 100] * 1000})
    await api.push(small)
    await api.push(large)
    assert seen[0] == loop_thread
    assert seen[1] != loop_thread


# --------------------------------------------------------------------------- routes and logs


async def test_a_trailing_slash_is_a_404_envelope_never_a_redirect(api: Api) -> None:
    for path in ("/datafn/pull/", "/datafn/status/"):
        response = await api.http.post(path, content=b"{}", headers={"host": "evil.example"})
        assert response.status_code in (404, 405)
        assert "location" not in response.headers
        assert response.json()["ok"] is False
    response = await api.http.post("/datafn/pull/", content=b"{}")
    assert (response.status_code, response.json()["error"]["code"]) == (404, "NOT_FOUND")


async def _call_asgi(app: Any, path: str, receive: Callable[[], Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8787),
    }
    with anyio.fail_after(5):
        await app(scope, receive, send)
    return sent


async def test_a_client_disconnect_is_logged_at_debug(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    caplog.set_level(logging.DEBUG, logger="datafn.server")
    await _call_asgi(api.app, "/datafn/pull", receive)
    records = [r for r in caplog.records if r.name == "datafn.server"]
    assert not [r for r in records if r.levelno >= logging.WARNING]
    assert any("disconnected" in r.getMessage() for r in records)


async def test_a_body_not_sent_within_the_read_timeout_is_a_408(make_api: MakeApi) -> None:
    never = anyio.Event()

    async def receive() -> dict[str, Any]:
        await never.wait()
        return {"type": "http.disconnect"}  # pragma: no cover

    async with make_api(server={"read_timeout": 0.2}) as api:
        sent = await _call_asgi(api.app, "/datafn/pull", receive)
    assert sent[0]["status"] == 408
    envelope = orjson.loads(sent[1]["body"])
    assert envelope["error"]["code"] == "LIMIT_EXCEEDED"


@pytest.mark.parametrize("action", ["clone", "pull", "push", "reconcile", "seed", "status"])
async def test_production_internal_errors_carry_no_internals(
    make_api: MakeApi, action: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "SELECT password FROM users -- hunter2"

    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(secret)

    bodies = {
        "clone": {"clientId": "c1", "tables": ["todos"]},
        "pull": {"clientId": "c1", "cursors": {"todos": "0"}},
        "push": {"clientId": "c1", "mutations": [mutation("insert", "t", {"title": "x"})]},
        "reconcile": {"clientId": "c1", "resources": ["todos"]},
        "seed": {"data": {"todos": [{"title": "x"}]}},
        "status": None,
    }
    for production in (True, False):
        async with make_api(server={"production": production}) as api:
            if action == "status":
                api.server.service.status = lambda: explode().send(None)
            else:
                api.server.service.run = explode
            response = await api.call(action, bodies[action])
            assert response.status_code == 500
            envelope = response.json()
            assert envelope["error"]["code"] == "INTERNAL"
            if production:
                assert envelope["error"]["message"] == "internal error"
                assert "hunter2" not in response.text and "RuntimeError" not in response.text
            else:
                assert "hunter2" in envelope["error"]["message"]
    assert any("hunter2" in r.getMessage() for r in caplog.records)  # the log keeps it


# --------------------------------------------------------------------------- connections


def _port(base_url: str) -> int:
    return int(base_url.split(":")[2].split("/")[0])


def _exchange(port: int, data: bytes, *, chunk_wait: float = 5.0) -> bytes:
    """Send ``data`` (best effort: the server may close early), read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=chunk_wait) as sock:
        with suppress(OSError):  # the server may close before it has read everything
            sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def _envelope(answer: bytes) -> dict[str, Any]:
    return orjson.loads(answer.partition(b"\r\n\r\n")[2])  # type: ignore[no-any-return]


@pytest.fixture
def hostile_server() -> Iterator[Callable[..., Any]]:
    """``with hostile_server(**server_settings) as port:`` a uvicorn-served app on loopback."""

    @contextmanager
    def start(**server: Any) -> Iterator[int]:
        app = create_app(boot(server=server), schema=SCHEMA, store="memory://")
        with live_server(app) as (base, _uvicorn):
            yield _port(base)

    return start


def test_headers_over_the_cap_are_refused_with_431(hostile_server: Callable[..., Any]) -> None:
    with hostile_server(limits={"max_header_bytes": 2048}) as port:
        request = b"GET /datafn/status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
        answer = _exchange(port, request + b"x-pad: " + b"a" * 1500 + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200")
        answer = _exchange(port, request + b"x-pad: " + b"a" * 4000 + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 431")
        assert _envelope(answer)["error"]["code"] == "LIMIT_EXCEEDED"
        # a header that never ends is cut off at the cap, not read to its end
        answer = _exchange(port, request + b"x-pad: " + b"a" * 4_000_000)
        assert answer.startswith(b"HTTP/1.1 431")


def test_a_request_must_arrive_within_the_read_timeout(
    hostile_server: Callable[..., Any],
) -> None:
    with hostile_server(read_timeout=0.3) as port:
        # headers that never end
        answer = _exchange(port, b"POST /datafn/pull HTTP/1.1\r\nhost: x\r\n")
        assert answer.startswith(b"HTTP/1.1 408")
        assert _envelope(answer)["error"]["code"] == "LIMIT_EXCEEDED"
        # 1 of 100 body bytes
        head = b"POST /datafn/pull HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n"
        answer = _exchange(port, head + b"{")
        assert answer.startswith(b"HTTP/1.1 408")
        assert _envelope(answer)["error"]["code"] == "LIMIT_EXCEEDED"
        # a connection that sends nothing is closed without an answer
        assert _exchange(port, b"") == b""


def test_handling_may_take_longer_than_the_read_timeout(
    hostile_server: Callable[..., Any],
) -> None:
    class Slow:
        @hookimpl
        async def datafn_before_sync(self, phase: str, payload: Any, context: Any) -> None:
            await anyio.sleep(0.6)

    app = create_app(
        boot((Slow(),), server={"read_timeout": 0.2}), schema=SCHEMA, store="memory://"
    )
    with live_server(app) as (base, _uvicorn):
        body = b'{"clientId":"c1","cursors":{}}'
        head = b"POST /datafn/pull HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
        answer = _exchange(_port(base), head + b"content-length: 30\r\n\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 200")


def test_connections_are_bounded(hostile_server: Callable[..., Any]) -> None:
    status = b"GET /datafn/status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    with hostile_server(limits={"max_connections": 2}) as port:
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        try:
            # the server registers the idle connections as it accepts them: ask until it has
            answers = [_exchange(port, status) for _ in range(50)]
            assert any(a.startswith(b"HTTP/1.1 503") for a in answers)
        finally:
            for sock in idle:
                sock.close()
        answers = []
        for _ in range(50):
            answers.append(_exchange(port, status))
            if answers[-1].startswith(b"HTTP/1.1 200"):
                break
        assert answers[-1].startswith(b"HTTP/1.1 200")


def test_serve_says_which_mode_it_runs_in() -> None:
    from datafn.builtins.server_commands import describe_mode

    assert describe_mode(True).startswith("production mode")
    assert describe_mode(False).startswith("development mode")
    assert "--production" in describe_mode(False)
