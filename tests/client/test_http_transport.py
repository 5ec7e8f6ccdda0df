"""The built-in http transport: what it sends, and every way an answer can fail."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest
import respx

import datafn
from datafn import ConfigError, TransportError, ValidationFailed
from datafn.builtins.client_http import HttpTransport, environment_proxy
from datafn.config import load_config

REMOTE = "http://sync.test/datafn"


def answering(handler: Any, **options: Any) -> HttpTransport:
    return HttpTransport(
        REMOTE, transport=httpx.MockTransport(handler), headers={"x-app": "t"}, **options
    )


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
    assert request.headers["accept-encoding"] == "gzip, deflate"
    assert request.extensions["timeout"] == {
        "connect": 30.0,
        "read": 30.0,
        "write": 30.0,
        "pool": 30.0,
    }
    await transport.aclose()


async def test_credentials_in_the_url_are_sent_as_basic_auth() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True, "result": {}})

    transport = HttpTransport(
        "http://app:s%40cret@sync.test/datafn", transport=httpx.MockTransport(handler)
    )
    await transport.request("pull", {})
    assert seen[0].headers["authorization"] == "Basic YXBwOnNAY3JldA=="  # app:s@cret


@pytest.mark.parametrize(
    ("environment", "url", "proxy"),
    [
        ({}, "https://sync.test/datafn", None),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "https://sync.test/datafn", "http://proxy:3128"),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "http://sync.test/datafn", None),
        ({"ALL_PROXY": "http://proxy:3128"}, "http://sync.test/datafn", "http://proxy:3128"),
        (
            {"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "sync.test"},
            "http://sync.test/datafn",
            None,
        ),
    ],
)
def test_the_proxy_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], url: str, proxy: str | None
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        for spelling in (name, name.lower()):
            monkeypatch.delenv(spelling, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert environment_proxy(httpx.URL(url)) == proxy


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


class Body(httpx.AsyncByteStream):
    """A streamed body (no content-length) that records whether it was closed."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    async def __aiter__(self) -> Any:
        for chunk in self.chunks:
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


async def test_an_answer_declared_too_big_is_refused_unread() -> None:
    body = Body([b"{}"])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": str(2**21)}, stream=body)

    with pytest.raises(ValidationFailed, match="more than 1048576 bytes") as caught:
        await answering(handler, max_response_bytes=2**20).request("clone", {})
    assert caught.value.code == "LIMIT_EXCEEDED"  # not a transport failure: never retried
    assert body.closed


async def test_a_streamed_answer_is_cut_off_at_the_limit() -> None:
    body = Body([b"x" * 2**19] * 3)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body)

    with pytest.raises(ValidationFailed, match="more than 1048576 bytes"):
        await answering(handler, max_response_bytes=2**20).request("clone", {})
    assert body.closed


async def test_an_answer_that_cannot_be_decoded_names_its_status() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Body([b"not gzip"]), headers={"content-encoding": "gzip"})

    with pytest.raises(TransportError, match="HTTP 200 with a body that cannot be decoded"):
        await answering(handler).request("pull", {})


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


async def test_a_404_names_the_url_called_and_the_base_path_expected(tmp_path: Any) -> None:
    from datafn import NotFound, Runtime
    from datafn.protocol import PullResult, parse_envelope
    from datafn.server import create_app

    (tmp_path / "pyproject.toml").write_text("[tool.datafn]\n")
    runtime = Runtime.boot(pyproject=tmp_path / "pyproject.toml", use_env=False)
    schema = {"resources": [{"name": "todos", "fields": [{"name": "title", "type": "string"}]}]}
    app = create_app(runtime, schema=schema, store="memory://")
    # the remote without its base path: http://host:port instead of http://host:port/datafn
    transport = HttpTransport("http://127.0.0.1:8790", transport=httpx.ASGITransport(app))
    body = await transport.request("pull", {"clientId": "c", "cursors": {}})
    with pytest.raises(NotFound) as info:
        parse_envelope(body, PullResult)
    assert info.value.message == (
        "no such route: POST http://127.0.0.1:8790/pull; the server's DataFn routes are under "
        "/datafn, so the remote should be http://127.0.0.1:8790/datafn"
    )
    await transport.aclose()


async def test_a_404_without_an_envelope_names_the_url_called() -> None:
    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="<h1>Not Found</h1>")

    def other_json(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "Not Found"})

    for handler in (html, other_json):
        with pytest.raises(TransportError) as info:
            await answering(handler).request("pull", {})
        assert f"{REMOTE}/pull" in str(info.value)
        assert "base path" in str(info.value)


@pytest.mark.parametrize(
    ("remote", "problem"),
    [
        ("http://[::1/datafn", "Invalid IPv6 URL"),
        ("http://sync.test:99999/datafn", "out of range"),
        ("http://sync.test:80x/datafn", "could not be cast"),
        ("http://sync .test/datafn", "space or a control character"),
        ("http://sync\x00.test/datafn", "space or a control character"),
        ("ftp://sync.test/datafn", "the scheme must be"),
        ("sync.test/datafn", 'did you mean "http://sync.test/datafn"'),
    ],
)
def test_a_malformed_remote_is_refused_when_the_transport_is_built(
    remote: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match="expected an http:// or https:// URL") as info:
        HttpTransport(remote)
    assert info.value.key == "remote"
    assert problem in str(info.value)
    config = load_config(sync={"remote": remote, "transport": "memory"}, use_env=False)
    with pytest.raises(ConfigError) as info:  # named as the setting it came from
        HttpTransport(remote, config)
    assert info.value.key == "sync.remote"


async def test_a_remote_httpx_cannot_encode_fails_as_a_transport_error() -> None:
    transport = HttpTransport("http://user:s3cret@xn--a/datafn")  # invalid punycode
    with pytest.raises(TransportError, match="invalid URL") as info:
        await transport.request("status", None)
    assert "s3cret" not in str(info.value)
