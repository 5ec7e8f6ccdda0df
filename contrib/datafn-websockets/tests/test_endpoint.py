"""The /ws endpoint with real sockets: auth, limits, hello catch-up, garbage, shutdown."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode

TOKENS = {
    "server": {"tokens": {"tok-a": "alice", "tok-b": "bob"}, "namespace_template": "user:{subject}"}
}


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def push(remote: str, token: str | None, title: str, record_id: str) -> dict[str, Any]:
    mutation = {
        "resource": "todos",
        "operation": "insert",
        "id": record_id,
        "record": {"title": title},
        "clientId": "writer",
        "mutationId": f"m-{record_id}",
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{remote}/push",
            json={"clientId": "writer", "mutations": [mutation]},
            headers=auth(token) if token else {},
        )
    body = response.json()
    assert body["ok"] is True, body
    return body["result"]  # type: ignore[no-any-return]


async def recv_json(socket: Any) -> dict[str, Any]:
    with anyio.fail_after(5):
        return json.loads(await socket.recv())  # type: ignore[no-any-return]


async def test_cursor_reaches_sockets_of_the_namespace_only(live: Callable[..., Any]) -> None:
    async with (
        live(**TOKENS) as server,
        connect(server.ws_url, additional_headers=auth("tok-a")) as alice,
        connect(server.ws_url, additional_headers=auth("tok-b")) as bob,
    ):
        await alice.send(json.dumps({"type": "hello", "clientId": "a", "cursors": {}}))
        await bob.send(json.dumps({"type": "hello", "clientId": "b", "cursors": {}}))
        result = await push(server.remote, "tok-a", "for alice", "todo:1")
        assert await recv_json(alice) == {"type": "cursor", "cursor": result["cursor"]}
        # bob's namespace did not move: the next thing bob hears is about his own write
        mine = await push(server.remote, "tok-b", "for bob", "todo:2")
        assert await recv_json(bob) == {"type": "cursor", "cursor": mine["cursor"]}


async def test_hello_behind_the_server_gets_the_current_cursor(live: Callable[..., Any]) -> None:
    async with live() as server:
        first = await push(server.remote, None, "a", "todo:1")
        second = await push(server.remote, None, "b", "todo:2")
        async with connect(server.ws_url) as socket:
            await socket.send(
                json.dumps(
                    {"type": "hello", "clientId": "c", "cursors": {"todos": first["cursor"]}}
                )
            )
            assert await recv_json(socket) == {"type": "cursor", "cursor": second["cursor"]}


async def test_an_unauthenticated_upgrade_is_refused_before_it_is_accepted(
    live: Callable[..., Any],
) -> None:
    async with live(**TOKENS) as server:
        for headers in ({}, auth("wrong")):
            with pytest.raises(InvalidStatus) as info:
                async with connect(server.ws_url, additional_headers=headers):
                    pass  # never opened: a browser's backoff keeps growing
            response = info.value.response
            assert response.status_code == 401
            assert json.loads(response.body)["error"]["code"] == "FORBIDDEN"


async def test_a_browser_authenticates_with_the_ticket_subprotocol(
    live: Callable[..., Any],
) -> None:
    """The original client cannot send headers from a browser: it offers
    `datafn-sync-v1` and `datafn-ticket.<token>`; the server chooses the first, never echoes
    the credential."""
    async with live(**TOKENS) as server:
        offered = ["datafn-sync-v1", "datafn-ticket.tok-a"]
        async with connect(server.ws_url, subprotocols=offered) as socket:  # type: ignore[arg-type]
            assert socket.subprotocol == "datafn-sync-v1"
            await socket.send(json.dumps({"type": "hello", "clientId": "c", "cursors": {}}))
            await push(server.remote, "tok-a", "x", "todo:1")
            assert (await recv_json(socket))["type"] == "cursor"
        with pytest.raises(InvalidStatus) as info:
            async with connect(server.ws_url, subprotocols=["datafn-sync-v1", "datafn-ticket.no"]):  # type: ignore[list-item]
                pass
        assert info.value.response.status_code == 401


async def test_over_the_namespace_limit_is_closed_with_4503(live: Callable[..., Any]) -> None:
    limits = {"server": {"limits": {"max_ws_per_namespace": 2, "max_ws_connections": 3}}}
    async with live(**limits) as server:
        async with connect(server.ws_url) as one, connect(server.ws_url) as two:
            await one.send(json.dumps({"type": "hello", "clientId": "1", "cursors": {}}))
            await two.send(json.dumps({"type": "hello", "clientId": "2", "cursors": {}}))
            async with connect(server.ws_url) as three:
                with pytest.raises(ConnectionClosed) as info:
                    await recv_json(three)
            assert info.value.rcvd is not None and info.value.rcvd.code == 4503
        # slots are released when sockets close
        async with connect(server.ws_url) as again:
            await again.send(json.dumps({"type": "hello", "clientId": "3", "cursors": {}}))
            result = await push(server.remote, None, "x", "todo:9")
            assert await recv_json(again) == {"type": "cursor", "cursor": result["cursor"]}


async def test_garbage_frames_are_ignored_and_the_connection_survives(
    live: Callable[..., Any],
) -> None:
    async with live() as server, connect(server.ws_url) as socket:
        for frame in ["not json", b"\x00\xff", "[]", '{"type": "hello"}', '{"type": 1}', "{}"]:
            await socket.send(frame)
        await socket.send(json.dumps({"type": "hello", "clientId": "c", "cursors": {"todos": "x"}}))
        result = await push(server.remote, None, "still here", "todo:1")
        assert await recv_json(socket) == {"type": "cursor", "cursor": result["cursor"]}


async def test_oversized_message_closes_the_socket(live: Callable[..., Any]) -> None:
    limits = {"server": {"limits": {"max_ws_message_bytes": 1024}}}
    async with live(**limits) as server, connect(server.ws_url, max_size=None) as socket:
        await socket.send("x" * 5000)
        with pytest.raises(ConnectionClosed) as info:
            await recv_json(socket)
        assert info.value.rcvd is not None and info.value.rcvd.code in (1009, 1006)


async def test_shutdown_closes_every_socket_with_1001(live: Callable[..., Any]) -> None:
    async with live() as server, connect(server.ws_url) as socket:
        await socket.send(json.dumps({"type": "hello", "clientId": "c", "cursors": {}}))
        await anyio.lowlevel.checkpoint()  # let the endpoint register the socket
        with anyio.fail_after(5):
            while not server.datafn.realtime.total:  # noqa: ASYNC110 - a counter, no event
                await anyio.sleep(0.01)
        await server.datafn.realtime.close_all()
        with pytest.raises(ConnectionClosed) as info:
            await recv_json(socket)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001


@contextmanager
def server_log(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    """The records of uvicorn's ``uvicorn.error`` logger (the WebSocket protocol's) at DEBUG."""
    logger = logging.getLogger("uvicorn.error")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(caplog.handler)
    try:
        yield caplog.records
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)


async def test_debug_logs_never_show_a_token(
    live: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with live(**TOKENS) as server:
        with server_log(caplog) as records:
            async with connect(server.ws_url, additional_headers=auth("tok-a")) as socket:
                await socket.send(json.dumps({"type": "hello", "clientId": "c", "cursors": {}}))
                await push(server.remote, "tok-a", "x", "todo:1")
                assert (await recv_json(socket))["type"] == "cursor"
    lines = [record.getMessage() for record in records]
    assert any("authorization" in line.lower() for line in lines)  # the header is logged…
    assert not any("tok-a" in line for line in lines)  # …without its value


async def test_a_duplicate_authorization_header_is_refused_as_over_http(
    live: Callable[..., Any],
) -> None:
    twice = [("Authorization", "Bearer wrong"), ("Authorization", "Bearer tok-a")]
    async with live(**TOKENS) as server:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{server.remote}/pull", json={"clientId": "c", "cursors": {}}, headers=twice
            )
        assert response.status_code == 401
        with pytest.raises(InvalidStatus) as refused:
            async with connect(server.ws_url, additional_headers=twice):
                pass
        assert refused.value.response.status_code == 401


async def test_a_text_frame_that_is_not_utf8_is_the_clients_error_in_one_line(
    live: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with live() as server:
        with server_log(caplog) as records:
            async with connect(server.ws_url) as socket:
                socket.protocol.send_frame(Frame(Opcode.TEXT, b"\xff\xfe"))
                socket.send_data()
                with pytest.raises(ConnectionClosed) as info:
                    await recv_json(socket)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1007
    assert not [r for r in records if r.levelno >= logging.ERROR]
    shown = [r for r in records if "UTF-8" in r.getMessage()]
    assert len(shown) == 1 and shown[0].levelno == logging.WARNING
    assert shown[0].exc_info is None


async def test_the_python_channel_takes_a_refused_upgrade_as_refused(
    live: Callable[..., Any],
) -> None:
    from datafn.config import WsReconnectSettings
    from datafn.events import EventBus
    from datafn_websockets.channel import WebSocketChannel

    async def cursors() -> dict[str, str]:
        return {}

    async def on_cursor(seq: int) -> None:
        return None

    bus = EventBus()
    gone: list[Any] = []
    bus.on("ws_disconnected", gone.append)
    async with live(**TOKENS) as server:
        channel = WebSocketChannel(
            server.remote,
            client_id="c1",
            cursors=cursors,
            on_cursor=on_cursor,
            events=bus,
            settings=WsReconnectSettings(),
            headers=auth("wrong"),
        )
        with anyio.fail_after(10):
            await channel.run()  # returns: wrong credentials are not retried
    assert [e.context.delay for e in gone] == [None]
    assert channel.delays == []
