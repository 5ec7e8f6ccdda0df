"""End to end over real HTTP: uvicorn on a loopback port, the SQLite store, bearer tokens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.routing import Mount

from datafn.plugin import hookimpl
from datafn.server import create_app

from .conftest import SCHEMA, boot, live_server, mutation

TOKENS = {"token-alice": "alice", "token-bob": "bob"}


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _ok(response: httpx.Response) -> Any:
    envelope = response.json()
    assert response.status_code == 200, envelope
    return envelope["result"]


def test_sync_over_http_with_sqlite_tokens_and_namespaces(tmp_path: Path) -> None:
    runtime = boot(server={"tokens": TOKENS, "namespace_template": "user:{subject}"})
    app = create_app(runtime, schema=SCHEMA, store=f"sqlite:///{tmp_path / 'e2e.db'}")
    with live_server(app) as (base, _), httpx.Client(base_url=base) as http:
        assert http.get("/status").status_code == 401
        assert http.post("/pull", json={}, headers=_auth("nope")).status_code == 401
        status = _ok(http.get("/status", headers=_auth("token-alice")))
        assert status["schemaHash"].startswith("sha256:")

        alice, bob = _auth("token-alice"), _auth("token-bob")
        pushed = _ok(
            http.post(
                "/push",
                json={
                    "clientId": "c1",
                    "mutations": [
                        mutation("insert", f"t{i:03d}", {"title": f"#{i}"}) for i in range(250)
                    ],
                },
                headers=alice,
            )
        )
        assert pushed["ok"] and pushed["cursor"] == "250" and pushed["cursorBefore"] == "0"
        _ok(
            http.post(
                "/push",
                json={
                    "clientId": "b",
                    "mutations": [
                        mutation(
                            "insert",
                            "t000",
                            {
                                "title": "bob's",
                            },
                            client_id="b",
                        )
                    ],
                },
                headers=bob,
            )
        )

        ids: list[str] = []
        after = None
        while True:
            page = _ok(
                http.post(
                    "/clone",
                    json={
                        "clientId": "c1",
                        "page": {"table": "todos", "afterId": after, "limit": 100},
                    },
                    headers=alice,
                )
            )
            ids += [r["id"] for r in page["data"]["todos"]]
            assert page["cursors"] == {"todos": "250"}
            after = page["next"]["todos"]
            if after is None:
                break
        assert ids == [f"t{i:03d}" for i in range(250)]

        pulled = _ok(
            http.post("/pull", json={"clientId": "c1", "cursors": {"todos": "200"}}, headers=alice)
        )
        assert len(pulled["records"]["todos"]) == 50 and pulled["cursors"] == {"todos": "250"}
        bob_view = _ok(
            http.post("/pull", json={"clientId": "b", "cursors": {"todos": "0"}}, headers=bob)
        )
        assert bob_view["records"] == {"todos": [{"id": "t000", "title": "bob's", "done": False}]}
        counts = _ok(
            http.post("/reconcile", json={"clientId": "c1", "resources": ["todos"]}, headers=alice)
        )
        assert counts == {"ok": True, "counts": {"todos": 250}}
        response = http.post(
            "/push",
            content=b'{"clientId": "c1", "mutations": [' + b" " * (6 * 1024 * 1024) + b"]}",
            headers={**alice, "content-type": "application/json"},
        )
        assert response.status_code == 413


class _Gate:
    """Holds every push until released, to have a request in flight."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    @hookimpl
    async def datafn_before_sync(self, phase: str, payload: Any, context: Any) -> None:
        if phase == "push":
            self.entered.set()
            import anyio

            await anyio.to_thread.run_sync(self.release.wait, 10)


def test_graceful_shutdown_finishes_in_flight_and_refuses_new(tmp_path: Path) -> None:
    gate = _Gate()
    app = create_app(boot((gate,)), schema=SCHEMA, store=f"sqlite:///{tmp_path / 'g.db'}")
    results: dict[str, Any] = {}
    with live_server(app) as (base, server):
        http = httpx.Client(base_url=base)
        http.get("/status")  # open a keep-alive connection

        def slow_push() -> None:
            with httpx.Client(base_url=base) as other:
                body = {"clientId": "c1", "mutations": [mutation("insert", "t", {"title": "x"})]}
                results["push"] = other.post("/push", json=body)

        pusher = threading.Thread(target=slow_push)
        pusher.start()
        assert gate.entered.wait(10)
        server.begin_shutdown()
        refused = app.state.datafn
        assert refused.draining
        try:
            late = http.get("/status")
            assert late.status_code == 503
            assert late.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        except httpx.TransportError:
            pass  # uvicorn may already have closed the idle connection: also a refusal
        gate.release.set()
        pusher.join(10)
        http.close()
    assert results["push"].status_code == 200
    assert results["push"].json()["result"]["applied"] == ["insert-t"]


async def test_mounted_into_a_host_application(tmp_path: Path) -> None:
    datafn_app = create_app(boot(), schema=SCHEMA, store=f"sqlite:///{tmp_path / 'm.db'}")
    host = Starlette(routes=[Mount("/api", app=datafn_app)])
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://h/api/datafn") as http:
        # the host does not run the mounted app's lifespan: the store opens on first use
        body = {"clientId": "c1", "mutations": [mutation("insert", "t", {"title": "x"})]}
        assert (await http.post("/push", json=body)).json()["result"]["cursor"] == "1"
        assert (await http.get("/status")).status_code == 200
    await datafn_app.state.datafn.aclose()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_datafn_serve_command(tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_bytes(orjson.dumps(SCHEMA))
    (tmp_path / "pyproject.toml").write_text("[tool.datafn.server]\nproduction = true\n")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFN_")}
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("datafn")),
            "serve",
            "--schema",
            str(schema),
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}/datafn"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/status").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "datafn serve did not start"
            time.sleep(0.05)
        body = {"clientId": "c1", "mutations": [mutation("insert", "t", {"title": "x"})]}
        assert httpx.post(f"{base}/push", json=body).json()["result"]["cursor"] == "1"
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.wait(20) in (0, -signal.SIGTERM)
        assert proc.stdout is not None
        output = proc.stdout.read()
        assert b"Application shutdown complete" in output
        assert b"datafn: production mode" in output  # it says what its errors reveal
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert (tmp_path / "datafn.db").exists()  # the default database, in the working directory


def test_a_serving_process_freezes_what_is_alive_at_start_up(tmp_path: Path) -> None:
    import gc

    gc.unfreeze()
    app = create_app(boot(), schema=SCHEMA, store=f"sqlite:///{tmp_path / 'gc.db'}")
    try:
        with live_server(app) as (base, _):
            assert gc.get_freeze_count() == 0  # not unless asked (the host may be a client too)
        with live_server(app, freeze_gc=True) as (base, _):
            # the schema, the application and the modules are out of the collector's way
            assert gc.get_freeze_count() > 1000
            assert httpx.get(f"{base}/status").status_code == 200
    finally:
        gc.unfreeze()
