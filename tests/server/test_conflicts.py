"""Conflicts on the server: the wire (``baseSeq`` in, ``conflicts`` and error details out),
the settings, and the push fast path. The store part runs in the conformance suite
(datafn.testing.server_conflicts) on every store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from datafn import hookimpl
from datafn.errors import ConfigError
from datafn.runtime import Runtime
from datafn.server import create_app
from datafn.server.mutations import history_wanted
from datafn.server.store import PendingMutation

from .conftest import SCHEMA, MakeApi, mutation


def based(op: str, record_id: str, record: dict[str, Any] | None, base: int, **kw: Any) -> Any:
    return {**mutation(op, record_id, record, **kw), "baseSeq": base}


async def test_push_pull_and_global_pull_carry_the_conflict(make_api: MakeApi) -> None:
    async with make_api() as api:
        await api.push(mutation("insert", "t1", {"title": "a"}, client_id="c0"), client_id="c0")
        await api.push(
            based("merge", "t1", {"title": "theirs"}, 1, client_id="c2", mid="m2"),
            client_id="c2",
        )
        answer = await api.push(based("merge", "t1", {"title": "ours"}, 1, mid="m1"))
        conflict = {
            "fields": ["title"],
            "baseSeq": 1,
            "seq": 2,
            "clientId": "c2",
            "previous": {"title": "theirs"},
            "resolution": "last-writer-wins",
            "winningSeq": 3,
        }
        assert answer["applied"] == ["m1"]
        assert answer["conflicts"] == [
            {"mutationId": "m1", "resource": "todos", "id": "t1", "conflict": conflict}
        ]
        pulled = await api.pull({"todos": "0"})
        assert pulled["records"]["todos"] == [
            {"id": "t1", "title": "ours", "done": False},
        ]
        assert pulled["conflicts"] == [
            {"resource": "todos", "id": "t1", "seq": 3, "clientId": "c1", "conflict": conflict}
        ]
        # a pull after the conflicting change carries nothing more
        assert "conflicts" not in await api.pull({"todos": "3"})
        changes = (await api.ok("pull", {"clientId": "z", "cursor": "0"}))["changes"]
        assert [c.get("conflict") for c in changes] == [None, None, {**conflict, "by": "c1"}]


async def test_rejected_write_answers_the_current_record(make_api: MakeApi) -> None:
    async with make_api(server={"conflicts": {"default": "reject"}}) as api:
        await api.push(mutation("insert", "t1", {"title": "a"}, client_id="c0"), client_id="c0")
        await api.push(based("delete", "t1", None, 1, client_id="c2", mid="d2"), client_id="c2")
        answer = await api.push(based("merge", "t1", {"title": "ours"}, 1, mid="m1"))
        assert answer["ok"] is False and answer["applied"] == []
        assert answer["errors"] == [
            {
                "mutationId": "m1",
                "code": "CONFLICT",
                "message": answer["errors"][0]["message"],
                "path": "baseSeq",
                "retryable": False,
                "details": {
                    "fields": ["title"],
                    "baseSeq": 1,
                    "seq": 2,
                    "clientId": "c2",
                    "current": None,
                },
            }
        ]
        assert "after baseSeq 1" in answer["errors"][0]["message"]


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('todos = "first-writer-wins"', "tool.datafn.server.conflicts.todos"),
        ('nope = "reject"', "tool.datafn.server.conflicts.nope"),
    ],
)
def test_bad_conflict_settings_name_their_key(tmp_path: Path, line: str, key: str) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        f'[project]\nname = "t"\n\n[tool.datafn.server.conflicts]\n{line}\n', encoding="utf-8"
    )
    with pytest.raises(ConfigError) as info:
        create_app(Runtime.boot(use_env=False, pyproject=pyproject), schema=SCHEMA)
    assert info.value.key == key


def test_history_is_wanted_only_below_the_records_seq() -> None:
    def write(op: str, record_id: str, base: int | None) -> PendingMutation:
        record = None if op == "delete" else {"id": record_id, "title": "x"}
        return PendingMutation(f"{op}-{record_id}", "todos", op, record_id, record, base_seq=base)  # type: ignore[arg-type]

    stored = {("todos", "a"): {"id": "a"}, ("todos", "b"): {"id": "b"}}
    seqs = {("todos", "a"): 5, ("todos", "b"): 9}
    batch = [
        write("merge", "a", 5),  # the record's seq is the base: nothing to read
        write("merge", "b", None),  # no base: no detection
        write("merge", "b", 7),  # below: read
        write("replace", "b", 3),  # the lowest base of the record's writes is read from
        write("merge", "gone", 2),  # a merge of a missing record (deleted?): read
        write("insert", "new", 2),  # an insert of a missing record: nothing to read
        write("delete", "gone2", 2),  # deleting a missing record changes nothing
    ]
    assert history_wanted(batch, stored, seqs) == {("todos", "b"): 3, ("todos", "gone"): 2}


async def test_the_sqlite_push_reads_the_change_log_only_below_the_records_seq(
    make_api: MakeApi, tmp_path: Path
) -> None:
    async with make_api(store=f"sqlite:///{tmp_path}/server.db") as api:
        statements: list[str] = []

        def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        engine = api.server.store.engine
        sa.event.listen(engine, "before_cursor_execute", seen)
        try:
            await api.push(mutation("insert", "t1", {"title": "a"}))

            def history_reads() -> int:
                return sum("ORDER BY seq DESC LIMIT" in s and "record_id" in s for s in statements)

            await api.push(based("merge", "t1", {"title": "b"}, 1, mid="m2"))  # seq 1 <= 1
            await api.push(mutation("merge", "t1", {"title": "c"}, mid="m3"))  # no base
            assert history_reads() == 0
            await api.push(based("merge", "t1", {"title": "d"}, 1, mid="m4"))  # seq 3 > 1
            assert history_reads() == 1
        finally:
            sa.event.remove(engine, "before_cursor_execute", seen)


class Failing:
    @hookimpl
    def datafn_resolve_conflict(self, fields: list[str]) -> dict[str, Any] | None:
        raise RuntimeError("resolver bug")


async def test_a_failing_resolver_fails_the_push_and_names_its_plugin(
    make_api: MakeApi,
) -> None:
    async with make_api(plugins=(Failing(),)) as api:
        await api.push(mutation("insert", "t1", {"title": "a"}, client_id="c0"), client_id="c0")
        await api.push(
            based("merge", "t1", {"title": "theirs"}, 1, client_id="c2", mid="m2"),
            client_id="c2",
        )
        error = await api.error(
            "push",
            {"clientId": "c1", "mutations": [based("merge", "t1", {"title": "ours"}, 1)]},
            status=500,
            code="INTERNAL",
        )
        assert "datafn_resolve_conflict failed in plugin" in error["message"]
        assert "resolver bug" in error["message"]
        # nothing of the push was committed: the client sends it again later
        pulled = await api.pull({"todos": "0"})
        assert pulled["records"]["todos"][0]["title"] == "theirs"
