"""The built-in http transport: what it sends, and every way an answer can fail."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest
import respx

import datafn
from datafn import TransportError
from datafn.builtins import client_http
from datafn.builtins.client_http import HttpTransport

REMOTE = "http://sync.test/datafn"


def answering(handler: Any) -> HttpTransport:
    return HttpTransport(REMOTE, transport=httpx.MockTransport(handler), headers={"x-app": "t"})


async def test_a_request_posts_json_with_the_configured_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"ok": True, "result": {"echo": json.loads(request.content)}}
        )

    transport = answering(handler)
    assert await transport.request("pull", {"clientId": "c"}) == {
        "ok": True,
        "result": {"echo": {"clientId": "c"}},
    }
    request = seen[0]
    assert (request.method, str(request.url)) == ("POST", f"{REMOTE}/pull")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"datafn/{datafn.__version__}"
    assert request.headers["x-app"] == "t"
    await transport.aclose()


async def test_status_is_a_get_without_a_body() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True, "result": {}})

    await answering(handler).request("status", None)
    assert seen[0].method == "GET" and seen[0].content == b""
    assert "content-type" not in seen[0].headers


async def test_a_compressed_answer_is_decoded() -> None:
    body = gzip.compress(b'{"ok": true, "result": {"n": 1}}')

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-encoding": "gzip"})

    assert await answering(handler).request("pull", {}) == {"ok": True, "result": {"n": 1}}


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (httpx.ConnectError("refused"), "cannot reach http://sync.test/datafn/push: ConnectError"),
        (httpx.ReadTimeout("slow"), "http://sync.test/datafn/push timed out (ReadTimeout)"),
    ],
)
async def test_network_failures_become_transport_errors(
    failure: httpx.HTTPError, message: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    with pytest.raises(TransportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await answering(handler).request("push", {})


async def test_an_answer_that_is_not_json_names_its_status() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    with pytest.raises(TransportError, match="HTTP 502") as caught:
        await answering(handler).request("pull", {})
    assert caught.value.http_status == 502


async def test_an_answer_declared_too_big_is_refused_unread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_http, "MAX_RESPONSE_BYTES", 100)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * 101)

    with pytest.raises(TransportError, match="101 bytes, more than 100"):
        await answering(handler).request("clone", {})


async def test_a_streamed_answer_is_cut_off_at_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_http, "MAX_RESPONSE_BYTES", 100)

    async def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 30

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks())  # no content-length: chunked

    with pytest.raises(TransportError, match="more than 100 bytes"):
        await answering(handler).request("clone", {})


async def test_over_the_network_stack() -> None:
    # the default transport (httpx's connection pool), with the network mocked by respx
    with respx.mock(assert_all_called=True) as network:
        route = network.post(f"{REMOTE}/pull").respond(200, json={"ok": True, "result": {}})
        transport = HttpTransport(REMOTE, headers={"authorization": "Bearer s3cret"})
        try:
            assert await transport.request("pull", {"clientId": "c"}) == {"ok": True, "result": {}}
        finally:
            await transport.aclose()
    assert route.calls.last.request.headers["authorization"] == "Bearer s3cret"
