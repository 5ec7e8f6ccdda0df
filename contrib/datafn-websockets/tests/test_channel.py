"""The client channel against a real WebSocket server on a loopback port."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from websockets.asyncio.server import ServerConnection, serve

from datafn.config import WsReconnectSettings
from datafn.events import Event, EventBus
from datafn_websockets import ReconnectSchedule, WebSocketChannel, websocket_url


def test_schedule_follows_the_documented_formula() -> None:
    settings = WsReconnectSettings(base_delay=1.0, multiplier=2.0, max_delay=60.0, jitter=0.5)
    values = iter([0.0, 1.0, 0.5, 0.2, 0.9, 0.0, 0.0, 0.3])
    schedule = ReconnectSchedule(settings, random=lambda: next(values))
    delays = [schedule.next_delay() for _ in range(8)]
    assert delays == [1.0, 2.5, 4.25, 8.1, 16.45, 32.0, 60.0, 60.0]
    schedule.reset()
    assert schedule.attempt == 0


def test_schedule_does_not_overflow_on_long_outages() -> None:
    schedule = ReconnectSchedule(WsReconnectSettings(), random=lambda: 1.0)
    assert schedule.delay(10_000) == 60.0


@pytest.mark.parametrize(
    ("remote", "url"),
    [
        ("http://127.0.0.1:8787/datafn", "ws://127.0.0.1:8787/datafn/ws"),
        ("https://api.example.com/datafn/", "wss://api.example.com/datafn/ws"),
    ],
)
def test_websocket_url(remote: str, url: str) -> None:
    assert websocket_url(remote) == url


class FakeServer:
    """Records hellos; sends what the test queues, then closes when told."""

    def __init__(self) -> None:
        self.hellos: list[dict[str, Any]] = []
        self.to_send: list[str | bytes] = []
        self.close_code: int | None = None
        self.connections = 0

    async def handler(self, socket: ServerConnection) -> None:
        self.connections += 1
        self.hellos.append(json.loads(await socket.recv()))
        for message in self.to_send:
            await socket.send(message)
        if self.close_code is not None:
            await socket.close(self.close_code, "bye")
            return
        await socket.wait_closed()


@pytest.fixture
async def fake_server() -> AsyncIterator[tuple[FakeServer, str]]:
    fake = FakeServer()
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield fake, f"http://127.0.0.1:{port}/datafn"


def channel(
    remote: str,
    bus: EventBus,
    announced: list[int],
    got_two: anyio.Event | None = None,
    **kwargs: Any,
) -> WebSocketChannel:
    async def cursors() -> dict[str, str]:
        return {"todos": "7"}

    async def on_cursor(seq: int) -> None:
        announced.append(seq)
        if got_two is not None and len(announced) == 2:
            got_two.set()

    return WebSocketChannel(
        remote,
        client_id="c1",
        cursors=cursors,
        on_cursor=on_cursor,
        events=bus,
        settings=kwargs.pop("settings", WsReconnectSettings()),
        **kwargs,
    )


async def reconnect_delays(remote: str, bus: EventBus, count: int, jitter: float) -> list[float]:
    """Run a channel until it has asked to sleep ``count`` times; the delays it asked for.

    The sleep is injected, so the schedule is checked without waiting for it."""
    slept: list[float] = []
    done = anyio.Event()

    async def fake_sleep(delay: float) -> None:
        slept.append(delay)
        if len(slept) == count:
            done.set()
            await anyio.sleep_forever()

    ch = channel(remote, bus, [], sleep=fake_sleep, random=lambda: jitter)
    async with anyio.create_task_group() as tg:
        tg.start_soon(ch.run)
        with anyio.fail_after(5):
            await done.wait()
        tg.cancel_scope.cancel()
    return slept


async def test_hello_on_open_cursor_messages_and_garbage_ignored(
    fake_server: tuple[FakeServer, str],
) -> None:
    fake, remote = fake_server
    fake.to_send = [
        "not json",
        b"\xff\xfe",
        json.dumps({"type": "mystery", "x": 1}),
        json.dumps({"type": "cursor", "cursor": "-1"}),
        json.dumps({"type": "cursor", "cursor": "42"}),
        json.dumps({"type": "cursor", "cursor": "43"}),
    ]
    bus = EventBus()
    announced: list[int] = []
    events: list[str] = []
    bus.on("*", lambda event: events.append(event.name))
    got_two = anyio.Event()
    ch = channel(remote, bus, announced, got_two)
    async with anyio.create_task_group() as tg:
        tg.start_soon(ch.run)
        with anyio.fail_after(5):
            await got_two.wait()
        tg.cancel_scope.cancel()
    assert announced == [42, 43]
    assert fake.hellos == [{"type": "hello", "clientId": "c1", "cursors": {"todos": "7"}}]
    assert events[0] == "ws_connected"


async def test_reconnects_with_the_schedule_and_says_hello_again(
    fake_server: tuple[FakeServer, str],
) -> None:
    fake, remote = fake_server
    fake.close_code = 1001  # the server goes away after each hello
    bus = EventBus()
    disconnected: list[Event] = []
    bus.on("ws_disconnected", disconnected.append)
    slept = await reconnect_delays(remote, bus, 3, 0.5)
    # every open resets the attempt counter, so each reconnect starts from the base delay
    assert slept == [1.25, 1.25, 1.25]
    assert len(fake.hellos) == 3
    assert [e.context.delay for e in disconnected] == [1.25, 1.25, 1.25]


async def test_unreachable_server_backs_off_exponentially_without_raising() -> None:
    with anyio.fail_after(5):
        port = await _free_port()
    bus = EventBus()
    slept = await reconnect_delays(f"http://127.0.0.1:{port}/datafn", bus, 4, 0.0)
    assert slept == [1.0, 2.0, 4.0, 8.0]


async def test_reconnect_disabled_stops_after_the_first_close(
    fake_server: tuple[FakeServer, str],
) -> None:
    fake, remote = fake_server
    fake.close_code = 1001
    bus = EventBus()
    disconnected: list[Event] = []
    bus.on("ws_disconnected", disconnected.append)
    ch = channel(remote, bus, [], settings=WsReconnectSettings(enabled=False))
    with anyio.fail_after(5):
        await ch.run()
    assert fake.connections == 1
    assert disconnected[0].context.delay is None


async def test_unauthenticated_close_is_not_retried(fake_server: tuple[FakeServer, str]) -> None:
    fake, remote = fake_server
    fake.close_code = 4401
    ch = channel(remote, EventBus(), [])
    with anyio.fail_after(5):
        await ch.run()
    assert fake.connections == 1


async def _free_port() -> int:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    return int(port)


async def test_refusals_after_accept_keep_backing_off(fake_server: tuple[FakeServer, str]) -> None:
    fake, remote = fake_server
    fake.close_code = 4503  # over the limits: accepted only to be closed
    slept = await reconnect_delays(remote, EventBus(), 4, 0.0)
    assert slept == [1.0, 2.0, 4.0, 8.0]
