"""Retention as the server serves it: the CURSOR_EXPIRED envelope, clone cursors at the floor,
the background task and ``datafn compact`` (the stores' behaviour is in the conformance
suite, datafn.testing.server_store)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from datafn.config import RetentionSettings
from datafn.errors import CursorExpired, error_from_envelope
from datafn.schema import load_schema
from datafn.server.memory import MemoryServerStore
from datafn.server.retention import run_retention

from .conftest import SCHEMA, MakeApi, mutation

EXPIRE_AT_ONCE = {"retention": {"change_log_horizon": 0, "tombstone_ttl": 0}}


async def test_a_pull_from_below_the_floor_is_a_410_envelope_naming_the_resources(
    make_api: MakeApi,
) -> None:
    async with make_api(server=EXPIRE_AT_ONCE) as api:
        await api.push(
            mutation("insert", "a", {"title": "a"}),
            mutation("insert", "b", {"title": "b"}),
            mutation("insert", "n", {"body": "x"}, resource="notes"),
        )
        await api.push(mutation("delete", "a"))  # seq 4
        report = await api.server.run_retention()
        assert report.dropped == 1
        body = {"clientId": "c1", "cursors": {"todos": "3", "notes": "0"}}
        error = await api.error("pull", body, status=410, code="CURSOR_EXPIRED")
        assert error["details"] == {
            "path": "cursors.todos",
            "resources": ["todos"],
            "floors": {"todos": "4"},
            "cursors": {"todos": "3"},
        }
        assert isinstance(error_from_envelope(error, http_status=410), CursorExpired)
        # at the floor the pull is answered (nothing is missing from there)
        answer = await api.pull({"todos": "4", "notes": "0"})
        assert answer["cursors"] == {"todos": "4", "notes": "3"}
        # the global-cursor form is refused the same way
        error = await api.error(
            "pull", {"clientId": "c1", "cursor": "2"}, status=410, code="CURSOR_EXPIRED"
        )
        assert error["details"]["path"] == "cursor"
        everything = await api.ok("pull", {"clientId": "c1", "cursor": "0"})  # cloneUp's form
        assert [c["id"] for c in everything["changes"]] == ["b", "n"]
        # a clone answers a cursor at or above the floor, paged or not
        page = await api.ok(
            "clone", {"clientId": "c1", "page": {"table": "todos", "afterId": None, "limit": 10}}
        )
        assert page["cursors"] == {"todos": "4"} and [r["id"] for r in page["data"]["todos"]] == [
            "b"
        ]
        whole = await api.ok("clone", {"clientId": "c1", "tables": ["todos", "notes"]})
        assert whole["cursors"] == {"todos": "4", "notes": "3"}
        await api.pull({"todos": whole["cursors"]["todos"], "notes": "3"})


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'retention.db'}"
    return str(request.getfixturevalue("postgres_url"))


async def _compacted_log(api: Any) -> int:
    """Pushes, retention (the floor at the delete of t07), more pushes; answers the floor."""
    await api.push(*(mutation("insert", f"t{i:02}", {"title": f"t{i}"}) for i in range(10)))
    await api.push(mutation("insert", "n1", {"body": "x"}, resource="notes"))
    await api.push(*(mutation("merge", f"t{i:02}", {"done": True}) for i in range(0, 10, 3)))
    await api.push(mutation("delete", "t00"), mutation("delete", "t05"))
    floor = int((await api.push(mutation("delete", "t07")))["cursor"])
    report = await api.server.run_retention()
    assert report.dropped == 3 and report.removed > 0
    # after the floor: changes a later page carries
    await api.push(mutation("insert", "t20", {"title": "late"}), mutation("delete", "t01"))
    await api.push(mutation("merge", "t03", {"title": "t3 again"}, mid="merge-t03-again"))
    return floor


async def test_a_paged_global_pull_from_0_completes_past_the_floor(
    make_api: MakeApi, store_url: str
) -> None:
    """The original client's cloneUp pages the global-cursor pull from "0": its first answer
    reaches the compaction floor, so the next pages start past it and are never refused."""
    async with make_api(store=store_url, server=EXPIRE_AT_ONCE) as api:
        floor = await _compacted_log(api)
        live = await api.ok("clone", {"clientId": "c1"})
        expected = {(table, row["id"]): row for table, rows in live["data"].items() for row in rows}
        held: dict[tuple[str, str], Any] = {}
        cursor, pages = "0", []
        for _ in range(50):  # bounded: a pull that never ends fails here
            answer = await api.ok("pull", {"clientId": "c1", "cursor": cursor, "limit": 3})
            if answer["nextCursor"] is None:
                break
            pages.append(answer)
            for change in answer["changes"]:
                key = (change["resource"], change["id"])
                if change["op"] == "delete":
                    held.pop(key, None)
                else:
                    held[key] = {**held.get(key, {}), **change["record"]}
            cursor = answer["nextCursor"]
        else:
            pytest.fail("the global pull did not finish")
        assert int(pages[0]["nextCursor"]) >= floor > 3  # the first answer reached the floor
        assert len(pages[0]["changes"]) > 3 and len(pages) > 1
        assert held == expected
        assert held[("todos", "t03")]["title"] == "t3 again" and ("todos", "t01") not in held
        # from a cursor inside the compacted range, the pull is refused as ever
        for below in ("1", str(floor - 1)):
            error = await api.error(
                "pull", {"clientId": "c1", "cursor": below}, status=410, code="CURSOR_EXPIRED"
            )
            assert error["details"]["path"] == "cursor"
        assert (await api.ok("pull", {"clientId": "c1", "cursor": str(floor)}))["changes"]


async def test_a_global_pull_from_0_beyond_max_clone_records_is_refused(
    make_api: MakeApi,
) -> None:
    settings = {**EXPIRE_AT_ONCE, "limits": {"max_clone_records": 5}}
    async with make_api(server=settings) as api:
        await _compacted_log(api)
        error = await api.error(
            "pull",
            {"clientId": "c1", "cursor": "0", "limit": 2},
            status=400,
            code="LIMIT_EXCEEDED",
        )
        assert error["details"]["path"] == "cursor" and "floor" in error["message"]
        # a page that reaches the floor by itself needs no more
        answer = await api.ok("pull", {"clientId": "c1", "cursor": "0", "limit": 1000})
        assert answer["nextCursor"] is not None


async def test_without_retention_nothing_expires(make_api: MakeApi) -> None:
    async with make_api() as api:
        await api.push(mutation("insert", "a", {"title": "a"}))
        await api.push(mutation("delete", "a"))
        answer = await api.pull({"todos": "0"})
        assert answer["deleted"] == {"todos": ["a"]}


class _CountingStore(MemoryServerStore):
    """A memory store that tells when retention pruned its idempotency records."""

    def __init__(self) -> None:
        super().__init__("memory://", load_schema(SCHEMA))
        self.pruned: list[int] = []
        self.ran = anyio.Event()

    async def prune_idempotency(self, before: float, limit: int) -> int:
        deleted = await super().prune_idempotency(before, limit)
        self.pruned.append(deleted)
        if deleted:
            self.ran.set()
        return deleted


async def test_the_server_runs_retention_every_interval(make_api: MakeApi) -> None:
    store = _CountingStore()
    settings = {"retention": {"interval": 0.05, "idempotency_window": 0.01}}
    async with make_api(store=store, server=settings) as api:
        await api.push(mutation("insert", "a", {"title": "a"}))
        with anyio.fail_after(10):
            await store.ran.wait()
        assert sum(store.pruned) == 1
        # the record is gone: the replay is a new write (an identical insert: a no-op)
        replay = await api.push(mutation("insert", "a", {"title": "a"}))
        assert replay["applied"] == ["insert-a"]


async def test_a_store_without_retention_keeps_everything(caplog: pytest.LogCaptureFixture) -> None:
    class Bare(MemoryServerStore):
        supports_retention = False

    store = Bare("memory://", load_schema(SCHEMA))
    report = await run_retention(store, RetentionSettings())
    assert not report.supported and "does not implement retention" in str(report)
    assert "does not implement it" in caplog.text


def test_datafn_compact_runs_retention_once_and_says_what_it_removed(tmp_path: Path) -> None:
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "pyproject.toml").write_text(
        '[tool.datafn]\nschema = "schema.json"\n'
        '[tool.datafn.server]\ndatabase = "sqlite:///server.db"\n'
        "[tool.datafn.server.retention]\nchange-log-horizon = 0\n"
    )
    store_url = f"sqlite:///{tmp_path / 'server.db'}"

    async def fill() -> None:
        from datafn.server.store import PendingMutation
        from datafn_sqlmodel.server_store import SqlServerStore

        async with SqlServerStore(store_url, load_schema(SCHEMA)) as store:
            for n in range(30):
                record: dict[str, Any] = {"id": "t1", "title": f"#{n}"}
                await store.apply_push(
                    "datafn", "c", [PendingMutation(f"m{n}", "todos", "replace", "t1", record)]
                )

    anyio.run(fill)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFN_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "datafn",
            "--config",
            "pyproject.toml",
            "compact",
            "--batch-size",
            "7",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "29 superseded changes" in result.stdout and "1 namespaces" in result.stdout
    with sqlite3.connect(tmp_path / "server.db") as db:
        rows = db.execute("SELECT seq, op FROM datafn_changes").fetchall()
    assert rows == [(30, "replace")]
