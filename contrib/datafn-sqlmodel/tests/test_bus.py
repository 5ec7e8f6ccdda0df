"""The PostgreSQL notification bus against the real service: two buses = two processes."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import psycopg
import pytest

from datafn.schema import load_schema
from datafn.server.bus import Notification
from datafn.testing.server_store import SCHEMA, pending
from datafn_sqlmodel.bus import PostgresNotificationBus
from datafn_sqlmodel.server_store import SqlServerStore


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


async def test_a_write_made_while_the_listener_was_away_reaches_the_subscribers(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = f"catch-up-{uuid.uuid4().hex}"
    store = SqlServerStore(postgres_url, load_schema(SCHEMA))
    await store.open()
    bus = PostgresNotificationBus(postgres_url)
    listeners: list[int] = []  # backend pids of the listening connections
    away, back = anyio.Event(), anyio.Event()
    connect = bus._connect_listener

    async def connect_when_let(*args: Any) -> Any:
        if listeners:  # reconnecting: wait until the test made its write
            away.set()
            await back.wait()
        conn = await connect()
        listeners.append(conn.info.backend_pid)
        return conn

    monkeypatch.setattr(bus, "_connect_listener", connect_when_let)
    await bus.open()
    try:
        async with bus.subscribe(namespace) as sub:
            outcome = await store.apply_push(namespace, "c", [pending("insert", "todos:1", {})])
            await bus.publish(namespace, outcome.cursor)
            with anyio.fail_after(5):
                assert await sub.__anext__() == Notification(namespace, 1)
            async with await psycopg.AsyncConnection.connect(bus.dsn, autocommit=True) as admin:
                await admin.execute("SELECT pg_terminate_backend(%s)", (listeners[0],))
            with anyio.fail_after(10):
                await away.wait()
            # committed and announced while nobody listens: the notification is lost
            outcome = await store.apply_push(namespace, "c", [pending("insert", "todos:2", {})])
            await bus.publish(namespace, outcome.cursor)
            back.set()
            with anyio.fail_after(10):
                assert await sub.__anext__() == Notification(namespace, 2)
            assert len(listeners) == 2
    finally:
        await bus.aclose()
        await store.aclose()


async def test_a_bus_database_without_the_stores_counters_catches_up_with_what_it_knew(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = PostgresNotificationBus(postgres_url)
    schema = f"empty_{uuid.uuid4().hex}"
    async with await psycopg.AsyncConnection.connect(bus.dsn, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            await conn.execute(f'SET search_path TO "{schema}"')  # no datafn_counters here
            bus._latest["ns"] = 3
            async with bus.subscribe("ns") as sub:
                await bus._catch_up(conn)
                assert await sub.__anext__() == Notification("ns", 3)
        finally:
            await conn.execute(f'DROP SCHEMA "{schema}"')
    assert "no seqs to catch up with after a reconnect" in caplog.text
