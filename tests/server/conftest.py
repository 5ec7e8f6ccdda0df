"""Fixtures of the server tests: a schema, an in-process app and an httpx client for it."""

from __future__ import annotations

import functools
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from datafn.runtime import Runtime
from datafn.server import create_app

SCHEMA: dict[str, Any] = {
    "resources": [
        {
            "name": "todos",
            "version": 1,
            "idPrefix": "todo",
            "fields": [
                {"name": "title", "type": "string", "required": True, "maxLength": 200},
                {"name": "done", "type": "boolean", "default": False},
                {"name": "rank", "type": "number", "nullable": True},
                {"name": "tags", "type": "array"},
            ],
        },
        {
            "name": "notes",
            "version": 1,
            "fields": [{"name": "body", "type": "string"}],
        },
        {
            "name": "audit",
            "isRemoteOnly": True,
            "fields": [{"name": "what", "type": "string"}],
        },
    ]
}


def mutation(
    op: str,
    record_id: str,
    record: dict[str, Any] | None = None,
    *,
    resource: str = "todos",
    mid: str | None = None,
    client_id: str = "c1",
    guard: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A wire mutation; the mutation id defaults to ``<op>-<id>``."""
    out: dict[str, Any] = {
        "resource": resource,
        "version": 1,
        "operation": op,
        "id": record_id,
        "clientId": client_id,
        "mutationId": mid or f"{op}-{record_id}",
    }
    if record is not None:
        out["record"] = record
    if guard is not None:
        out["if"] = guard
    return out


class Api:
    """Calls the routes of an app and unwraps envelopes."""

    def __init__(self, http: httpx.AsyncClient, app: Any) -> None:
        self.http = http
        self.app = app
        self.server = app.state.datafn

    async def call(self, action: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        if action == "status":
            return await self.http.get("/datafn/status", **kwargs)
        return await self.http.post(f"/datafn/{action}", json=body, **kwargs)

    async def ok(self, action: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        response = await self.call(action, body, **kwargs)
        envelope = response.json()
        assert response.status_code == 200, envelope
        assert envelope["ok"] is True and "error" not in envelope
        return envelope["result"]  # type: ignore[no-any-return]

    async def error(
        self, action: str, body: Any = None, *, status: int, code: str, **kwargs: Any
    ) -> dict[str, Any]:
        response = await self.call(action, body, **kwargs)
        envelope = response.json()
        assert response.status_code == status, envelope
        assert envelope["ok"] is False and "result" not in envelope
        assert envelope["error"]["code"] == code, envelope
        assert "path" in envelope["error"]["details"]
        return envelope["error"]  # type: ignore[no-any-return]

    async def push(self, *mutations: dict[str, Any], client_id: str = "c1", **kw: Any) -> Any:
        return await self.ok("push", {"clientId": client_id, "mutations": list(mutations)}, **kw)

    async def pull(self, cursors: dict[str, str], limit: int | None = None, **kw: Any) -> Any:
        body: dict[str, Any] = {"clientId": "c1", "cursors": cursors}
        if limit is not None:
            body["limit"] = limit
        return await self.ok("pull", body, **kw)


@functools.cache
def empty_pyproject() -> Path:
    """A pyproject.toml with an empty [tool.datafn], so no developer configuration leaks in."""
    path = Path(tempfile.mkdtemp(prefix="datafn-server-tests-")) / "pyproject.toml"
    path.write_text(
        '[project]\nname = "t"\n\n[tool.datafn]\nplugins = ["sqlmodel-server"]\n', encoding="utf-8"
    )
    return path


def boot(plugins: tuple[object, ...] = (), **overrides: Any) -> Runtime:
    return Runtime.boot(plugins=plugins, use_env=False, pyproject=empty_pyproject(), **overrides)


@asynccontextmanager
async def serve_app(
    *,
    store: Any = "memory://",
    schema: Any = None,
    plugins: tuple[object, ...] = (),
    **overrides: Any,
) -> AsyncIterator[Api]:
    runtime = boot(plugins, **overrides)
    app = create_app(runtime, schema=schema or SCHEMA, store=store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield Api(http, app)


MakeApi = Callable[..., Any]


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with serve_app() as found:
        yield found


@pytest.fixture
def make_api() -> MakeApi:
    """``async with make_api(plugins=(…,), server={…}) as api:`` for custom apps."""
    return serve_app


@contextmanager
def live_server(app: Any, *, timeout: float = 10.0, **options: Any) -> Iterator[tuple[str, Any]]:
    """Run ``app`` under uvicorn on a free loopback port in a thread.

    Yields ``(base_url, uvicorn_server)``; readiness is polled, never slept on.
    """
    from datafn.server.serve import uvicorn_server

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn_server(app, host="127.0.0.1", port=port, log_level="warning", **options)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/datafn", server
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
