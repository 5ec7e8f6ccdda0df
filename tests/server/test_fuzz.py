"""Property-based fuzzing of every route: whatever the body, an envelope, never a 500, and a
refused request writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import Api, serve_app

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64) + 1, max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["", "0", "42", "-1", "1e3", "todos", "\x00", "x" * 300, "\u202e", "😀"]),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(
                st.text(max_size=8),
                st.sampled_from(["__proto__", "constructor", "prototype", "id"]),
            ),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


def _or_junk(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, strategy, strategy, _json)


_resource_names = st.one_of(
    st.sampled_from(["todos", "notes", "audit", "ghost", "__proto__", ""]), st.text(max_size=6)
)
_resources = _or_junk(_resource_names)
_ids = _or_junk(
    st.one_of(st.sampled_from(["a", "b", "c", "x" * 256, "a\x00b", ""]), st.text(max_size=10))
)
_records = _or_junk(
    st.dictionaries(
        st.sampled_from(
            ["id", "title", "done", "rank", "tags", "body", "extra", "__proto__", "constructor"]
        ),
        _json,
        max_size=5,
    )
)
_mutation = st.fixed_dictionaries(
    {},
    optional={
        "resource": _resources,
        "version": _or_junk(st.integers(min_value=-1, max_value=3)),
        "operation": _or_junk(st.sampled_from(["insert", "merge", "replace", "delete", "upsert"])),
        "id": _ids,
        "record": _records,
        "clientId": _or_junk(st.sampled_from(["c1", "c2"])),
        "mutationId": _or_junk(st.sampled_from(["m1", "m2", "m3"])),
        "if": _records,
    },
)
_client = {"clientId": _or_junk(st.sampled_from(["c1", "", "\x00"]))}
_cursors = _or_junk(
    st.dictionaries(
        _resource_names,
        _or_junk(st.sampled_from(["0", "1", "99999999999999999999", "-1", "01"])),
        max_size=3,
    )
)

BODIES = {
    "push": st.fixed_dictionaries(
        {}, optional={**_client, "mutations": _or_junk(st.lists(_mutation, max_size=6))}
    ),
    "pull": st.fixed_dictionaries(
        {}, optional={**_client, "cursors": _cursors, "limit": _or_junk(st.integers(-5, 5000))}
    ),
    "clone": st.fixed_dictionaries(
        {},
        optional={
            **_client,
            "tables": _or_junk(st.lists(_resources, max_size=3)),
            "page": _or_junk(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "table": _resources,
                        "afterId": _ids,
                        "limit": _or_junk(st.integers(-1, 5000)),
                    },
                )
            ),
        },
    ),
    "reconcile": st.fixed_dictionaries(
        {}, optional={**_client, "resources": _or_junk(st.lists(_resources, max_size=3))}
    ),
    "seed": st.fixed_dictionaries(
        {},
        optional={
            "data": _or_junk(
                st.dictionaries(
                    _resource_names, _or_junk(st.lists(_records, max_size=3)), max_size=2
                )
            )
        },
    ),
}


class Client:
    """Drives an in-process app from synchronous code (hypothesis runs examples in sync)."""

    def __init__(self, portal: BlockingPortal, api: Api) -> None:
        self.portal = portal
        self.api = api

    def post(self, route: str, content: bytes) -> Any:
        return self.portal.call(lambda: self.api.http.post(f"/datafn/{route}", content=content))


def _fingerprint(client: Client) -> Any:
    store = client.api.server.store

    async def read() -> Any:
        return (
            await store.namespace_seq("datafn"),
            await store.counts("datafn", ["todos", "notes", "audit"]),
        )

    return client.portal.call(read)


def _check_envelope(response: Any) -> dict[str, Any]:
    assert response.status_code in (200, 400, 413), response.text
    envelope = orjson.loads(response.content)
    assert isinstance(envelope, dict) and isinstance(envelope.get("ok"), bool)
    if envelope["ok"]:
        assert set(envelope) == {"ok", "result"}
    else:
        assert set(envelope) == {"ok", "error"}
        assert isinstance(envelope["error"]["details"]["path"], str)
        assert envelope["error"]["code"] != "INTERNAL"
    return envelope  # type: ignore[no-any-return]


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        store = "memory://"
    elif request.param == "sqlite":
        store = f"sqlite:///{tmp_path / 'fuzz.db'}"
    else:
        store = request.getfixturevalue("postgres_url")
    with start_blocking_portal() as portal:
        app = serve_app(store=store, server={"limits": {"max_body_bytes": 4096}})
        with portal.wrap_async_context_manager(app) as api:
            yield Client(portal, api)


def test_every_route_survives_any_body(client: Client) -> None:
    @FUZZ
    @given(st.sampled_from(sorted(BODIES)).flatmap(lambda r: st.tuples(st.just(r), BODIES[r])))
    def run(case: tuple[str, Any]) -> None:
        route, body = case
        before = _fingerprint(client)
        response = client.post(route, content=json.dumps(body).encode())
        envelope = _check_envelope(response)
        if not envelope["ok"]:
            assert _fingerprint(client) == before, "a refused request wrote something"

    run()


def test_arbitrary_bytes_are_refused_cleanly(client: Client) -> None:
    @FUZZ
    @given(st.sampled_from(sorted(BODIES)), st.binary(max_size=300))
    def run(route: str, raw: bytes) -> None:
        before = _fingerprint(client)
        response = client.post(route, content=raw)
        envelope = _check_envelope(response)
        if not envelope["ok"]:
            assert _fingerprint(client) == before

    run()


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"clientId":"c1","cursors":' + b'{"a":' * 100 + b"1" + b"}" * 101,
        b'{"clientId":"c1","mutations":[' + b",".join([b'{"x":1}'] * 600) + b"]}",
        b'{"clientId":"\\ud800","cursors":{}}',
        b'{"clientId":"c1","cursors":{"todos":"0"},"limit":' + b"9" * 40 + b"}",
        b'{"data":{"todos":[{"id":"a","title":"x","__proto__":{"polluted":true}}]}}',
        b"\xef\xbb\xbf{}",
        b"x" * 5000,
        # amplification shapes: many items under a long key (N×K bytes of paths, once)
        b'{"clientId":"c1","cursors":{"' + b"k" * 2000 + b'":[' + b",".join([b"0"] * 900) + b"]}}",
        b'{"clientId":"c1","' + b"k" * 2000 + b'":[' + b",".join([b"[]"] * 600) + b"]}",
        # lists of resource names far longer than the schema
        b'{"clientId":"c1","resources":['
        + b",".join([b'"todos"'] * 200)
        + b'],"tables":['
        + b",".join([b'"todos"'] * 200)
        + b"]}",
        b'{"clientId":"c1","cursors":{' + b",".join(b'"r%d":"0"' % i for i in range(300)) + b"}}",
        b'{"data":{' + b",".join(b'"r%d":[]' % i for i in range(400)) + b"}}",
        # many values in one record, many records in one seed
        b'{"clientId":"c1","mutations":[{"resource":"todos","operation":"insert","id":"a",'
        b'"clientId":"c1","mutationId":"m","record":{"title":"x","tags":['
        + b",".join([b"0"] * 1700)
        + b"]}}]}",
        b'{"data":{"todos":[' + b",".join([b"{}"] * 1300) + b"]}}",
    ],
)
def test_hostile_bodies(client: Client, raw: bytes) -> None:
    for route in BODIES:
        before = _fingerprint(client)
        envelope = _check_envelope(client.post(route, content=raw))
        if not envelope["ok"]:
            assert _fingerprint(client) == before
        if route == "seed" and b"__proto__" in raw:
            assert envelope["error"]["details"]["path"] == "data.todos[0].__proto__"
