"""The /ws endpoint with real sockets: auth, limits, hello catch-up, garbage, shutdown."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

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


async def test_unauthenticated_socket_is_closed_with_4401(live: Callable[..., Any]) -> None:
    async with live(**TOKENS) as server:
        for headers in ({}, auth("wrong")):
            async with connect(server.ws_url, additional_headers=headers) as socket:
                with pytest.raises(ConnectionClosed) as info:
                    await recv_json(socket)
            assert info.value.rcvd is not None and info.value.rcvd.code == 4401


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
