"""The guard, audit and template distributions in a real sync, configured only by pyproject.

This file is self-contained: ``test_fresh_environment.py`` also runs it inside a fresh virtual
environment where datafn and the three distributions are installed from source, with the
datafn.testing fixtures enabled by ``-p datafn.testing.pytest_plugin``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from datafn import Event, SyncVetoed

SCHEMA: dict[str, Any] = {
    "resources": [
        {
            "name": "todos",
            "idPrefix": "todo",
            "fields": [
                {"name": "title", "type": "string", "required": True},
                {"name": "done", "type": "boolean", "default": False},
            ],
        }
    ]
}


def test_guard_audit_and_template_are_discovered(datafn_project: Any) -> None:
    datafn_project.write(
        "[tool.datafn.guard]\nmax-batch-size = 10\n\n"
        '[tool.datafn.audit]\nsink = "file"\n\n'
        '[tool.datafn.template]\ndeny-phases = ["seed"]\n',
        schema=SCHEMA,
        settings={"required-plugins": ["datafn-guard", "datafn-audit", "template"]},
    )
    plugins = {p.name: p for p in datafn_project.boot().plugins.plugins()}
    assert plugins["guard"].distribution == "datafn-guard"
    assert plugins["audit"].distribution == "datafn-audit"
    assert plugins["template"].distribution == "datafn-plugin-template"
    assert "datafn_before_sync" in plugins["guard"].hooks
    assert "datafn_after_sync" in plugins["audit"].hooks


async def test_a_guard_veto_aborts_the_sync_before_anything_is_sent(
    datafn_project: Any, datafn_server: Any, datafn_client: Any
) -> None:
    datafn_project.write(
        '[tool.datafn.guard]\nrequire-credentials = true\n\n[tool.datafn.audit]\nsink = "file"\n',
        schema=SCHEMA,
    )
    server = datafn_server()
    events: list[Event] = []
    async with datafn_client() as client:
        client.events.on("*", events.append)
        todos = client.table("todos")
        for title in ("a", "b", "c"):
            await todos.insert({"title": title})
        with pytest.raises(SyncVetoed) as info:
            await client.sync.push()
        # every write alone is refused too: the refusal is of pushing, not of a write, so
        # every write stays queued (none becomes a dead letter)
        assert await client.store.pending_count() == 3, "nothing was acknowledged"
        assert await client.store.dead_letters() == []
    error = info.value
    assert error.plugin == "guard" and error.phase == "push"
    assert error.veto is not None and error.veto.rule == "require-credentials"  # type: ignore[attr-defined]
    assert "rule 'require-credentials'" in str(error)
    assert server.paths() == [], "nothing was sent"
    (failed,) = [e for e in events if e.name == "sync_failed"]
    assert failed.context.phase == "push" and failed.context.error is error
    audit = (datafn_project.path / "datafn-audit.jsonl").read_text().splitlines()
    (record,) = [json.loads(line) for line in audit]
    assert (record["outcome"], record["plugin"], record["rule"]) == (
        "vetoed",
        "guard",
        "require-credentials",
    )


async def test_a_batch_over_the_guards_limit_is_sent_in_smaller_pieces(
    datafn_project: Any, datafn_server: Any, datafn_client: Any
) -> None:
    datafn_project.write("[tool.datafn.guard]\nmax-batch-size = 2\n", schema=SCHEMA)
    server = datafn_server()
    async with datafn_client() as client:
        for title in ("a", "b", "c"):
            await client.table("todos").insert({"title": title})
        report = await client.sync.push()
        assert (report.applied, report.dead) == (3, [])
        assert await client.store.pending_count() == 0
    assert server.paths().count("/datafn/push") == 3


async def test_a_broken_audit_sink_never_blocks_sync_and_is_reported_once(
    datafn_project: Any, datafn_server: Any, datafn_client: Any
) -> None:
    (datafn_project.path / "not-a-file").mkdir()
    datafn_project.write(
        '[tool.datafn.audit]\nsink = "file"\npath = "not-a-file"\nsides = ["client"]\n',
        schema=SCHEMA,
    )
    server = datafn_server()
    events: list[Event] = []
    async with datafn_client() as client:
        client.events.on("plugin_error", events.append)
        todos = client.table("todos")
        for title in ("a", "b", "c"):
            await todos.insert({"title": title})
            report = await client.sync.push()
            assert report is not None
        await client.sync.pull()
        assert await client.store.pending_count() == 0, "every push completed"
    assert server.paths().count("/datafn/push") == 3
    assert len(events) == 1, "one report, not one per call"
    assert events[0].context.plugin == "audit"
    assert "IsADirectoryError" in str(events[0].context.error)
