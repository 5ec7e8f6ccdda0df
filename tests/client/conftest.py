from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from datafn.builtins.client_http import HttpTransport
from datafn.client import Client
from tests.client.fake_server import FakeServer

SCHEMA: dict[str, Any] = {
    "resources": [
        {
            "name": "todos",
            "version": 1,
            "idPrefix": "todo",
            "fields": [
                {"name": "title", "type": "string", "required": True, "maxLength": 200},
                {"name": "done", "type": "boolean", "default": False},
                {"name": "priority", "type": "number", "nullable": True},
                {"name": "tags", "type": "array"},
            ],
        },
        {
            "name": "notes",
            "fields": [{"name": "body", "type": "string"}],
        },
        {
            "name": "audit",
            "isRemoteOnly": True,
            "fields": [{"name": "what", "type": "string"}],
        },
    ]
}

REMOTE = "http://datafn.test/datafn"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("DATAFN_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


def _sqlite_available() -> bool:
    try:
        import datafn_sqlmodel.client  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(
    params=[
        "memory",
        pytest.param(
            "sqlite",
            marks=pytest.mark.skipif(
                not _sqlite_available(), reason="datafn-sqlmodel is not installed"
            ),
        ),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every client test runs on the memory store and on the SQLite store."""
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/client.db"


@pytest.fixture
def make_client(server: FakeServer, store_url: str) -> Callable[..., Client]:
    """``make_client(**kwargs)``: a client on ``store_url`` wired to the fake server."""

    def make(**kwargs: Any) -> Client:
        kwargs.setdefault("schema", SCHEMA)
        kwargs.setdefault("store", store_url)
        kwargs.setdefault("client_id", "client-a")
        fake = kwargs.pop("fake", server)
        if "transport" not in kwargs:
            kwargs["transport"] = HttpTransport(REMOTE, transport=fake.transport())
        kwargs.setdefault("use_env", False)
        return Client(**kwargs)

    return make


@contextlib.asynccontextmanager
async def hosted(client: Client) -> AsyncIterator[Client]:
    """Open ``client`` in a task of its own, so that entering and leaving it happen in one task
    (pytest-asyncio runs a fixture's setup and teardown in different tasks)."""
    opened = asyncio.Event()
    closing = asyncio.Event()
    failure: list[BaseException] = []

    async def host() -> None:
        try:
            async with client:
                opened.set()
                await closing.wait()
        except BaseException as exc:
            failure.append(exc)
            opened.set()
            raise

    task = asyncio.ensure_future(host())
    await opened.wait()
    if failure:
        await asyncio.gather(task, return_exceptions=True)
        raise failure[0]
    try:
        yield client
    finally:
        closing.set()
        await task


@pytest.fixture
async def client(make_client: Callable[..., Client]) -> AsyncIterator[Client]:
    async with hosted(make_client()) as c:
        c.sync.sleep = _no_sleep
        c.sync.random = lambda: 0.0
        yield c


async def _no_sleep(delay: float) -> None:
    return None
