"""The PostgreSQL notification bus against the real service: two buses = two processes."""

from __future__ import annotations

import anyio

from datafn.server.bus import Notification
from datafn_sqlmodel.bus import PostgresNotificationBus


async def test_notifications_reach_every_bus_on_the_database(postgres_url: str) -> None:
    first, second = PostgresNotificationBus(postgres_url), PostgresNotificationBus(postgres_url)
    await first.open()
    await second.open()
    try:
        async with second.subscribe("user:a") as only_a, second.subscribe() as everything:
            await first.publish("user:b", 3)
            await first.publish("user:a", 5)
            with anyio.fail_after(5):
                assert await only_a.__anext__() == Notification("user:a", 5)
                seen = {(await everything.__anext__()) for _ in range(2)}
            assert seen == {Notification("user:b", 3), Notification("user:a", 5)}
    finally:
        await first.aclose()
        await second.aclose()


async def test_bursts_coalesce_to_the_latest_seq(postgres_url: str) -> None:
    bus = PostgresNotificationBus(postgres_url)
    await bus.open()
    try:
        async with bus.subscribe("ns") as sub:
            for seq in range(1, 51):
                await bus.publish("ns", seq)
            await bus.publish("ns", 51)
            received: list[int] = []
            with anyio.fail_after(5):
                while not received or received[-1] != 51:
                    received.append((await sub.__anext__()).seq)
            assert received == sorted(set(received)), "a stale seq arrived after a newer one"
    finally:
        await bus.aclose()
