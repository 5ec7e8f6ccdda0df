"""The sync watchdog: each stuck cause is reported once per episode, with its recovery, on a
fake clock (``engine.clock``) driving :meth:`Watchdog.check` by hand.

The server is the real ASGI app in-process; a small httpx transport in front of it breaks one
route at a time (an error answer, a pull that never moves, a write held at the queue's head).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from datafn import Client, ProtocolError
from datafn.builtins.client_http import HttpTransport
from datafn.events import Event
from tests.client.conftest import SCHEMA, hosted
from tests.client.real_server import REMOTE, Server, serving


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Faults(httpx.AsyncBaseTransport):
    """The way to the server, with one route broken on demand (``broken[endpoint] = mode``)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.broken: dict[str, str] = {}
        self.sent: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = request.url.path.rsplit("/", 1)[-1]
        self.sent.append(endpoint)
        mode = self.broken.get(endpoint)
        if mode == "unavailable":
            error = {"code": "SERVICE_UNAVAILABLE", "message": "down", "details": {"path": "$"}}
            return httpx.Response(503, json={"ok": False, "error": error})
        if mode == "refused":  # a failure no retry cures
            error = {"code": "FORBIDDEN", "message": "refused", "details": {"path": "$"}}
            return httpx.Response(403, json={"ok": False, "error": error})
        if mode == "behind":  # the server says there is more, and gives nothing
            payload = orjson.loads(request.read())
            result = {"ok": True, "records": {}, "merged": {}, "deleted": {}}
            result |= {"cursors": payload["cursors"], "hasMore": True}
            return httpx.Response(200, json={"ok": True, "result": result})
        if mode == "hold-head":  # the oldest write is refused (retryably), the others applied
            payload = orjson.loads(request.read())
            head, *rest = payload["mutations"]
            forwarded = httpx.Request(
                "POST",
                request.url,
                headers={"content-type": "application/json"},
                content=orjson.dumps({**payload, "mutations": rest}),
            )
            response = await self.inner.handle_async_request(forwarded)
            body = orjson.loads(await response.aread())
            body["result"]["ok"] = False
            body["result"]["errors"].append(
                {
                    "mutationId": head["mutationId"],
                    "code": "MUTATION_FAILED",
                    "message": "held",
                    "path": "$",
                    "retryable": True,
                }
            )
            return httpx.Response(200, json=body)
        return await self.inner.handle_async_request(request)


@contextlib.asynccontextmanager
async def watched(
    store_url: str, tmp_path: Path, **watchdog: Any
) -> AsyncIterator[tuple[Server, Client, Faults, FakeClock, list[Event]]]:
    """A server and one client ``x`` (not started: nothing runs but what the test calls) whose
    engine clock is fake; the events are ``sync_stuck`` and ``sync_recovered`` in order."""
    async with serving(store_url, tmp_path) as server:
        faults = Faults(server.network)
        store = "memory://" if store_url == "memory://" else f"sqlite:///{tmp_path}/x.db"
        client = Client(
            store=store,
            schema=SCHEMA,
            client_id="x",
            transport=HttpTransport(REMOTE, transport=faults),
            use_env=False,
            sync={"push_max_retries": 0, "max_pull_iterations": 2, "watchdog": watchdog},
        )
        async with hosted(client) as x:
            clock = FakeClock()
            x.sync.clock = clock
            seen: list[Event] = []
            x.events.on("sync_stuck", seen.append)
            x.events.on("sync_recovered", seen.append)
            await x.sync.clone()
            yield server, x, faults, clock, seen


def _names(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.name, e.context.extra["cause"]) for e in events]


async def test_a_push_that_keeps_failing(store_url: str, tmp_path: Path) -> None:
    async with watched(store_url, tmp_path) as (server, x, faults, clock, seen):
        watchdog = x.sync.watchdog
        await x.table("todos").insert({"id": "t1", "title": "queued"})
        faults.broken["push"] = "unavailable"
        with pytest.raises(ProtocolError):
            await x.sync.push()
        clock.now = 119.0
        assert await watchdog.check() is None
        assert seen == []
        clock.now = 121.0
        state = await watchdog.check()
        assert state is not None and (state.cause, state.since) == ("push_failing", 0.0)
        assert _names(seen) == [("sync_stuck", "push_failing")]
        assert seen[0].context.extra["duration"] == 121.0
        assert faults.sent.count("push") == 2  # the recovery pushed at once, without backoff
        clock.now = 200.0
        await watchdog.check()
        assert len(seen) == 1  # once per episode
        status = await x.sync.status()
        assert status.stuck is not None and status.stuck.duration == 200.0
        assert status.stuck.recoveries == 1
        faults.broken.clear()
        clock.now = 241.0  # the next recovery is due: reconnect, then push
        await watchdog.check()
        assert await x.store.pending_count() == 0
        clock.now = 245.0
        assert await watchdog.check() is None
        assert _names(seen) == [("sync_stuck", "push_failing"), ("sync_recovered", "push_failing")]
        assert seen[1].context.extra["duration"] == 245.0
        assert seen[1].context.extra["recoveries"] == 2
        assert (await x.sync.status()).stuck is None
        assert await server.record("t1") is not None


async def test_failing_pulls_are_pulled_again_then_cloned_again(
    store_url: str, tmp_path: Path
) -> None:
    async with watched(store_url, tmp_path) as (_server, x, faults, clock, seen):
        watchdog = x.sync.watchdog
        faults.broken["pull"] = "refused"
        with pytest.raises(ProtocolError):
            await x.sync.pull()
        clock.now = 130.0
        state = await watchdog.check()
        assert state is not None and state.cause == "pull_failing"
        assert faults.sent[-1] == "pull"  # recovery 1: a pull from the last good cursor
        faults.broken.clear()
        faults.sent.clear()
        clock.now = 250.0  # recovery 2: clone again, then pull
        await watchdog.check()
        assert "clone" in faults.sent and faults.sent[-1] == "pull"
        clock.now = 251.0
        assert await watchdog.check() is None
        assert _names(seen) == [("sync_stuck", "pull_failing"), ("sync_recovered", "pull_failing")]


async def test_a_pull_that_cannot_catch_up(store_url: str, tmp_path: Path) -> None:
    async with watched(store_url, tmp_path) as (_server, x, faults, clock, seen):
        watchdog = x.sync.watchdog
        faults.broken["pull"] = "behind"
        report = await x.sync.pull()
        assert report.has_more and report.changes == 0
        clock.now = 60.0
        await x.sync.pull()  # still behind: the cursors did not move
        clock.now = 119.0
        assert await watchdog.check() is None
        clock.now = 120.0
        state = await watchdog.check()
        assert state is not None and (state.cause, state.since) == ("pull_behind", 0.0)
        faults.broken.clear()
        clock.now = 240.0
        await watchdog.check()
        clock.now = 241.0
        assert await watchdog.check() is None
        assert _names(seen) == [("sync_stuck", "pull_behind"), ("sync_recovered", "pull_behind")]


async def test_an_announcement_no_pull_answers(store_url: str, tmp_path: Path) -> None:
    async with watched(store_url, tmp_path, pull_after=1000.0) as (server, x, faults, clock, seen):
        watchdog = x.sync.watchdog
        async with hosted(server.client("y")) as y:
            await y.table("todos").insert({"id": "t9", "title": "from y"})
            await y.sync.push()
        announced = await server.store.namespace_seq("datafn")
        faults.broken["pull"] = "unavailable"
        assert await x.sync.cursor_announced(announced)  # its pull fails
        clock.now = 59.0
        assert await watchdog.check() is None
        clock.now = 61.0
        state = await watchdog.check()
        assert state is not None and state.cause == "announcement_unanswered"
        assert str(announced) in state.detail
        faults.broken.clear()
        clock.now = 122.0  # recovery 2: a full round
        await watchdog.check()
        assert await x.table("todos").get("t9") is not None
        clock.now = 123.0
        assert await watchdog.check() is None
        assert _names(seen) == [
            ("sync_stuck", "announcement_unanswered"),
            ("sync_recovered", "announcement_unanswered"),
        ]


async def test_a_pull_after_the_announcement_answers_it(store_url: str, tmp_path: Path) -> None:
    async with watched(store_url, tmp_path) as (_server, x, _faults, clock, seen):
        # a cursor no synced resource reaches (a remote-only write): a whole pull answers it
        assert await x.sync.cursor_announced(10_000)
        clock.now = 1000.0
        assert await x.sync.watchdog.check() is None
        assert seen == []


async def test_a_write_blocking_the_queue(store_url: str, tmp_path: Path) -> None:
    async with watched(store_url, tmp_path, push_after=1000.0, queue_after=30.0) as (
        server,
        x,
        faults,
        clock,
        seen,
    ):
        watchdog = x.sync.watchdog
        await x.table("todos").insert({"id": "t1", "title": "held"})
        await x.table("todos").insert({"id": "t2", "title": "passes"})
        faults.broken["push"] = "hold-head"
        assert await watchdog.check() is None  # the head is t1's write from now on
        for moment in (1.0, 10.0):
            clock.now = moment
            with pytest.raises(ProtocolError):
                await x.sync.push()
        clock.now = 29.0
        assert await watchdog.check() is None
        clock.now = 31.0
        state = await watchdog.check()
        assert state is not None and state.cause == "queue_blocked"
        assert await server.record("t2") is not None and await server.record("t1") is None
        faults.broken.clear()
        clock.now = 62.0
        await watchdog.check()
        clock.now = 63.0
        assert await watchdog.check() is None
        assert await server.record("t1") is not None
        assert _names(seen) == [
            ("sync_stuck", "queue_blocked"),
            ("sync_recovered", "queue_blocked"),
        ]


async def test_recoveries_are_bounded_and_offline_is_no_recovery(
    store_url: str, tmp_path: Path
) -> None:
    async with watched(store_url, tmp_path, max_recoveries=1) as (_server, x, faults, clock, seen):
        watchdog = x.sync.watchdog
        await x.table("todos").insert({"id": "t1", "title": "queued"})
        faults.broken["push"] = "unavailable"
        with pytest.raises(ProtocolError):
            await x.sync.push()
        for moment in (121.0, 500.0, 900.0):
            clock.now = moment
            await watchdog.check()
        assert faults.sent.count("push") == 2  # one recovery, then only reports
        assert len(seen) == 1
        # offline is no recovery: the episode goes on, and its clock pauses
        await x.sync.set_online(False)
        clock.now = 2000.0
        state = await watchdog.check()
        assert state is not None and state.cause == "push_failing"
        assert len(seen) == 1
        await x.sync.set_online(True)
        faults.broken.clear()
        await x.sync.push()
        clock.now = 2001.0
        assert await watchdog.check() is None
        assert _names(seen) == [("sync_stuck", "push_failing"), ("sync_recovered", "push_failing")]


async def test_offline_time_does_not_count(store_url: str, tmp_path: Path) -> None:
    async with watched(store_url, tmp_path) as (_server, x, faults, clock, seen):
        await x.table("todos").insert({"id": "t1", "title": "queued"})
        faults.broken["push"] = "unavailable"
        with pytest.raises(ProtocolError):
            await x.sync.push()  # failing since 0
        clock.now = 100.0
        await x.sync.set_online(False)
        clock.now = 1000.0
        assert await x.sync.watchdog.check() is None  # offline: not counted
        await x.sync.set_online(True)  # 900 s offline: the clock resumes at 100 s
        clock.now = 1019.0
        assert await x.sync.watchdog.check() is None
        clock.now = 1021.0
        state = await x.sync.watchdog.check()
        assert state is not None and state.since == 900.0
        assert [e.name for e in seen] == ["sync_stuck"]


async def _pull_quietly(x: Client) -> None:
    """What a trigger does now and then while the watchdog looks: a pull whose failure is
    only reported."""
    with contextlib.suppress(ProtocolError):
        await x.sync.pull()


async def test_an_outage_is_waited_out_without_cloning_again(
    store_url: str, tmp_path: Path
) -> None:
    # the server answers 503 to everything for ten minutes; the client stays online
    async with watched(store_url, tmp_path) as (server, x, faults, clock, seen):
        records = [{"id": f"t{i:03d}", "title": "x"} for i in range(50)]
        await server.store.seed("datafn", {"todos": records})
        await x.sync.pull()
        watchdog = x.sync.watchdog
        for endpoint in ("pull", "clone", "push", "status", "reconcile"):
            faults.broken[endpoint] = "unavailable"
        await _pull_quietly(x)
        faults.sent.clear()
        for step in range(1, 21):
            clock.now = step * 30.0
            state = await watchdog.check()
            assert step < 4 or (state is not None and state.cause == "pull_failing")
            if step % 2 == 0:
                await _pull_quietly(x)
        assert "clone" not in faults.sent  # a copy would not come either
        assert faults.sent.count("pull") >= 10 + 2  # the triggers' pulls and the recoveries'
        assert _names(seen) == [("sync_stuck", "pull_failing")]  # no recovery while it fails
        status = await x.sync.status()
        assert set(status.hydration.values()) == {"ready"}
        assert status.stuck is not None and status.stuck.recoveries == 3
        faults.broken.clear()
        faults.sent.clear()
        await x.sync.pull()  # the server is back: one pull, from the cursors
        assert faults.sent == ["pull"]
        assert await x.table("todos").count() == 50
        clock.now = 630.0
        assert await watchdog.check() is None
        assert _names(seen) == [("sync_stuck", "pull_failing"), ("sync_recovered", "pull_failing")]


async def test_a_pull_that_stays_behind_is_cloned_again_a_bounded_number_of_times(
    store_url: str, tmp_path: Path
) -> None:
    async with watched(store_url, tmp_path) as (_server, x, faults, clock, seen):
        watchdog = x.sync.watchdog
        faults.broken["pull"] = "behind"
        await x.sync.pull()
        faults.sent.clear()
        resources = len(x.sync.resources)
        for step in range(1, 121):  # an hour, a check every 30 s and a pull every minute
            clock.now = step * 30.0
            await watchdog.check()
            if step % 2 == 0:
                await x.sync.pull()
        # one episode, still under way: recovery 2 cloned again, recovery 3 was not due
        assert _names(seen) == [("sync_stuck", "pull_behind")]
        assert faults.sent.count("clone") == resources
        assert (await x.sync.status()).stuck is not None


async def test_episodes_that_keep_coming_back_clone_again_once_per_window(
    store_url: str, tmp_path: Path
) -> None:
    # every ten minutes one pull catches up (a real recovery), then the pulls fall behind again
    async with watched(store_url, tmp_path) as (_server, x, faults, clock, seen):
        watchdog = x.sync.watchdog
        faults.broken["pull"] = "behind"
        await x.sync.pull()
        faults.sent.clear()
        resources = len(x.sync.resources)
        for step in range(1, 121):
            clock.now = step * 30.0
            await watchdog.check()
            if step % 20 == 0:
                del faults.broken["pull"]
                await x.sync.pull()
                faults.broken["pull"] = "behind"
            elif step % 2 == 0:
                await x.sync.pull()
        names = _names(seen)
        assert names.count(("sync_stuck", "pull_behind")) == 6
        assert names.count(("sync_recovered", "pull_behind")) == 5  # the sixth goes on
        # a re-clone at most once per 10 × pull-after (20 minutes): 3 in the hour, not 6
        max_recoveries = x.sync.config.watchdog.max_recoveries
        assert faults.sent.count("clone") == 3 * resources
        assert faults.sent.count("clone") <= max_recoveries * resources


async def test_a_recovery_clone_the_server_refuses_leaves_the_resources_ready(
    store_url: str, tmp_path: Path
) -> None:
    async with watched(store_url, tmp_path) as (server, x, faults, clock, seen):
        await server.store.seed("datafn", {"todos": [{"id": "t1", "title": "x"}]})
        await x.sync.pull()
        watchdog = x.sync.watchdog
        faults.broken["pull"] = "behind"
        await x.sync.pull()
        faults.broken["clone"] = "unavailable"
        clock.now = 120.0
        await watchdog.check()  # recovery 1: a pull
        faults.sent.clear()
        clock.now = 240.0
        await watchdog.check()  # recovery 2: the clone is refused
        assert "clone" in faults.sent and faults.sent[-1] == "pull"
        status = await x.sync.status()
        assert set(status.hydration.values()) == {"ready"}
        assert await x.table("todos").get("t1") is not None
        faults.broken.clear()
        faults.sent.clear()
        await x.sync.pull()  # nothing is downloaded again
        assert faults.sent == ["pull"]
        clock.now = 241.0
        assert await watchdog.check() is None
        assert _names(seen) == [("sync_stuck", "pull_behind"), ("sync_recovered", "pull_behind")]
