"""RecordTexts: clone pages kept as the store's JSON texts, parsed only when read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from datafn.context import SyncContext
from datafn.plugin import hookimpl
from datafn.server.store import RecordTexts

from .conftest import MakeApi, mutation


def _page() -> RecordTexts:
    return RecordTexts(["a", "b", "c"], ['{"id":"a","n":1}', b'{"id":"b","n":2}', '{"id":"c"}'])


def test_reads_like_a_sequence_of_dicts() -> None:
    page = _page()
    assert isinstance(page, Sequence) and len(page) == 3
    assert page == [{"id": "a", "n": 1}, {"id": "b", "n": 2}, {"id": "c"}]
    assert page[-1] == {"id": "c"} and page[0] is page[0]  # parsed once, then kept
    assert [r["id"] for r in page[1:]] == ["b", "c"] and page.ids == ["a", "b", "c"]
    assert page != [{"id": "a", "n": 1}] and page != "abc"
    with pytest.raises(IndexError):
        page[3]
    with pytest.raises(ValueError, match="2 ids for 1 record texts"):
        RecordTexts(["a", "b"], ["{}"])


def test_unread_texts_are_written_as_they_are() -> None:
    page = _page()
    assert orjson.loads(orjson.dumps({"data": page.to_json()})) == {"data": list(_page())}
    assert not page._parsed  # writing it out parsed nothing
    only_text = RecordTexts(["x"], ['{"id":"x","odd":   1}'])
    assert orjson.dumps(only_text.to_json()) == b'[{"id":"x","odd":   1}]'


def test_records_a_reader_changed_are_written_changed() -> None:
    page = _page()
    page[1]["n"] = 20
    tail = page[1:]  # a slice keeps what was read
    assert orjson.loads(orjson.dumps(page.to_json()))[1] == {"id": "b", "n": 20}
    assert orjson.loads(orjson.dumps(tail.to_json())) == [{"id": "b", "n": 20}, {"id": "c"}]


class _Rewriter:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    @hookimpl
    def datafn_after_sync(
        self, phase: str, payload: Any, result: Any, context: SyncContext
    ) -> None:
        if phase == "clone":
            rows = result["data"]["todos"]
            self.seen.append(rows)
            rows[0]["title"] = "seen by a plugin"


@pytest.mark.parametrize("store", ["memory://", "sqlite://"])
async def test_a_clone_page_reaches_hooks_as_records_and_their_changes_are_sent(
    make_api: MakeApi, store: str
) -> None:
    rewriter = _Rewriter()
    async with make_api(plugins=(rewriter,), store=store) as api:
        await api.push(
            mutation("insert", "a", {"title": "first"}), mutation("insert", "b", {"title": "b"})
        )
        paged = await api.ok("clone", {"clientId": "c1", "page": {"table": "todos", "limit": 1}})
        whole = await api.ok("clone", {"clientId": "c1"})
    assert [len(rows) for rows in rewriter.seen] == [1, 2]
    assert all(isinstance(rows, Sequence) for rows in rewriter.seen)
    assert paged["data"]["todos"] == [{"id": "a", "title": "seen by a plugin", "done": False}]
    assert paged["next"]["todos"] == "a"
    assert [r["title"] for r in whole["data"]["todos"]] == ["seen by a plugin", "b"]
