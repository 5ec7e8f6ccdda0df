"""The client's contract with the application around it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from datafn import Client, TransportError, UnknownBackendError, hookimpl
from datafn.builtins.client_http import HttpTransport
from tests.client.conftest import SCHEMA, hosted
from tests.client.real_server import Server, serving


@pytest.fixture
async def server(store_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    async with serving(store_url, tmp_path) as found:
        yield found


def offline_client(**kwargs: Any) -> Client:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("down")

    transport = HttpTransport(
        "http://datafn.test/datafn", transport=httpx.MockTransport(unreachable)
    )
    return Client(
        schema=SCHEMA, store="memory://", transport=transport, use_env=False, push_max_retries=0
    )


async def test_an_exception_raised_in_the_block_comes_out_as_itself() -> None:
    error = ValueError("the application's own error")
    with pytest.raises(ValueError) as info:
        async with offline_client():
            raise error
    assert info.value is error


async def test_an_error_of_a_client_call_in_the_block_comes_out_as_itself() -> None:
    with pytest.raises(TransportError):
        async with offline_client() as client:
            await client.table("todos").insert({"title": "offline"})
            await client.sync.push()


async def test_start_returns_after_the_first_round_and_the_server_has_the_write(
    server: Server,
) -> None:
    async with hosted(server.client("x")) as client:
        await client.table("todos").insert({"id": "t1", "title": "before start"})
        await client.sync.start()
        assert await server.record("t1") == await client.table("todos").get("t1")
        status = await client.sync.status()
        assert (status.pending_changes, status.hydration["todos"]) == (0, "ready")
        await client.table("todos").insert({"id": "t2", "title": "after start"})
        await client.sync.wait_idle()
        assert await server.record("t2") is not None
        await client.sync.stop()


async def test_a_first_round_that_fails_is_reported_not_raised() -> None:
    async with offline_client() as client:
        failed: list[Any] = []
        client.events.on("sync_failed", failed.append)
        await client.table("todos").insert({"title": "offline"})
        await client.sync.start()  # returns: the round failed, the loop goes on
        status = await client.sync.status()
        assert isinstance(status.last_error, TransportError)
        assert failed and status.pending_changes == 1
        with pytest.raises(TransportError):
            await client.sync.wait_idle()
        await client.sync.stop()


@pytest.mark.parametrize(
    ("settings", "missing"),
    [({"ws": True, "realtime_channel": "sockets"}, "sockets"), ({"triggers": ["nope"]}, "nope")],
)
async def test_a_missing_plugin_fails_at_start(settings: dict[str, Any], missing: str) -> None:
    transport = HttpTransport("http://datafn.test/datafn", transport=httpx.MockTransport(_never))
    async with Client(
        schema=SCHEMA,
        store="memory://",
        transport=transport,
        use_env=False,
        remote="http://datafn.test/datafn",
        **settings,
    ) as client:
        with pytest.raises(UnknownBackendError, match=missing):
            await client.sync.start()
        assert not client.sync.running


def _never(request: httpx.Request) -> httpx.Response:
    raise AssertionError("nothing is sent when the configuration cannot work")


class DiesOnce:
    def __init__(self) -> None:
        self.calls = 0
        self.second_round = anyio.Event()

    @hookimpl(tryfirst=True)
    async def datafn_sync_loop(self, engine: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("the loop broke")
        await engine.start_lifecycle()
        self.second_round.set()
        await anyio.sleep_forever()


async def test_a_loop_that_dies_is_reported_and_restarted(server: Server) -> None:
    plugin = DiesOnce()
    async with hosted(server.client("x", plugins=[plugin], retry_base_delay=0.01)) as client:
        failed: list[Any] = []
        client.events.on("sync_failed", failed.append)
        await client.table("todos").insert({"id": "t1", "title": "queued"})
        await client.sync.start()
        assert [e.context.phase for e in failed][:1] == ["loop"]
        assert "the loop broke" in str(failed[0].context.error)
        with anyio.fail_after(10):
            await plugin.second_round.wait()  # run again after the delay
        assert await server.record("t1") is not None
        await client.sync.stop()


async def test_the_announcement_of_a_clients_own_push_asks_for_no_second_pull(
    server: Server,
) -> None:
    async with hosted(server.client("x", triggers=[])) as client:
        await client.sync.start()
        announced: list[bool] = []
        network = server.network
        handle = network.handle_async_request

        async def during_pull(request: httpx.Request) -> httpx.Response:
            response = await handle(request)
            if request.url.path.endswith("/pull") and not announced:
                # the real-time channel delivers the push's own seq while its pull runs
                seq = await server.store.namespace_seq("datafn")
                announced.append(await client.sync.cursor_announced(seq))
            return response

        network.handle_async_request = during_pull  # type: ignore[method-assign]
        await client.table("todos").insert({"id": "t1", "title": "live"})
        pulls = len([e for e, _ in network.requests if e == "pull"])
        await client.sync.push()
        assert announced == [False]  # the running pull reaches it
        assert not client.sync.announced.is_set()
        assert len([e for e, _ in network.requests if e == "pull"]) == pulls + 1
        await client.sync.stop()
