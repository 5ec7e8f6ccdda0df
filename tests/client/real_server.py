"""The real server application in-process, for client tests: clients are wired to it through
a small httpx transport that can lose an answer after the server has committed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from datafn import Client
from datafn.builtins.client_http import HttpTransport
from datafn.runtime import Runtime
from datafn.server import create_app
from datafn.server.memory import MemoryServerStore
from tests.client.conftest import SCHEMA

REMOTE = "http://datafn.test/datafn"


class Network(httpx.AsyncBaseTransport):
    """The way to the in-process server: ``lose_answer(client_id, endpoint)`` lets the server
    process the next such request and then drops its answer (a reset connection)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.asgi = httpx.ASGITransport(app=app)
        self.losses: list[tuple[str, str]] = []
        self.requests: list[tuple[str, Any]] = []

    def lose_answer(self, client_id: str, endpoint: str) -> None:
        self.losses.append((client_id, endpoint))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = request.url.path.rsplit("/", 1)[-1]
        body = request.read()
        payload = orjson.loads(body) if body else None
        self.requests.append((endpoint, payload))
        response = await self.asgi.handle_async_request(request)
        await response.aread()
        client_id = payload.get("clientId") if isinstance(payload, dict) else None
        if (client_id, endpoint) in self.losses:
            self.losses.remove((client_id, endpoint))
            raise httpx.ReadError("connection reset after the server answered")
        return response


class Server:
    """The real server app on a memory store, and clients wired to it."""

    def __init__(self, store_url: str, tmp_path: Path, schema: Any = SCHEMA) -> None:
        self.store = MemoryServerStore()
        self.store_url = store_url
        self.tmp_path = tmp_path
        self.schema = schema
        self.app = self._app(schema)
        self.network = Network(self.app)

    def _app(self, schema: Any) -> Any:
        pyproject = self.tmp_path / "server-pyproject.toml"
        pyproject.write_text('[project]\nname = "t"\n\n[tool.datafn]\n', encoding="utf-8")
        runtime = Runtime.boot(use_env=False, pyproject=pyproject)
        return create_app(runtime, schema=schema, store=self.store)

    def client(self, name: str, **kwargs: Any) -> Client:
        store = self.store_url
        if store.startswith("sqlite"):
            store = f"sqlite:///{self.tmp_path}/{name}.db"
        kwargs.setdefault("schema", SCHEMA)
        return Client(
            store=store,
            client_id=name,
            transport=HttpTransport(REMOTE, transport=self.network),
            use_env=False,
            **kwargs,
        )

    async def changes(self, record_id: str) -> list[Any]:
        """Every change-log entry of ``todos:record_id``."""
        changes = await self.store.changes_since("datafn", {"todos": 0}, 100_000)
        return [c for c in changes if c.id == record_id]

    async def record(self, record_id: str) -> Any:
        rows = await self.store.clone_page("datafn", "todos", None, 100_000)
        return next((dict(r) for r in rows if r["id"] == record_id), None)


@contextlib.asynccontextmanager
async def serving(store_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    """A :class:`Server` running for the ``async with`` block."""
    found = Server(store_url, tmp_path)
    async with found.app.router.lifespan_context(found.app):
        yield found
