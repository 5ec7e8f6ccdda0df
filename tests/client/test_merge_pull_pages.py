"""merge_pull_pages: one page with the effect of applying several pull pages in order."""

from __future__ import annotations

from typing import Any

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from datafn.builtins.client_memory_store import MemoryClientStore
from datafn.builtins.client_phases import merge_pull_pages
from datafn.client.store import PullPage, Query
from datafn.schema import Schema

SCHEMA = Schema.from_dict(
    {
        "resources": [
            {
                "name": "notes",
                "fields": [{"name": "a", "type": "number"}, {"name": "b", "type": "string"}],
            }
        ]
    }
)
IDS = st.sampled_from(["x", "y", "z"])
BODY = st.fixed_dictionaries({}, optional={"a": st.integers(0, 9), "b": st.sampled_from("pq")})


@st.composite
def pages(draw: Any) -> PullPage:
    # one pull page holds at most one entry per record (the server folds its changes)
    kinds = draw(st.dictionaries(IDS, st.sampled_from(["record", "merged", "deleted"])))
    records = [{"id": i, **draw(BODY)} for i, k in kinds.items() if k == "record"]
    merged = [{"id": i, **draw(BODY)} for i, k in kinds.items() if k == "merged"]
    deleted = [i for i, k in kinds.items() if k == "deleted"]
    cursor = draw(st.integers(1, 100))
    return PullPage({"notes": records}, {"notes": merged}, {"notes": deleted}, {"notes": cursor})


async def _state(store: MemoryClientStore) -> tuple[list[dict[str, Any]], int]:
    rows = await store.query("notes", Query())
    return rows, (await store.states(["notes"]))["notes"].cursor


@settings(max_examples=200, deadline=None)
@given(start=st.lists(st.tuples(IDS, BODY), max_size=3), sequence=st.lists(pages(), max_size=5))
def test_merged_pages_have_the_effect_of_the_pages_in_order(
    start: list[tuple[str, dict[str, Any]]], sequence: list[PullPage]
) -> None:
    async def run() -> None:
        one_by_one, at_once = MemoryClientStore(schema=SCHEMA), MemoryClientStore(schema=SCHEMA)
        for store in (one_by_one, at_once):
            await store.apply_pull(PullPage({"notes": [{"id": i, **b} for i, b in start]}))
        for page in sequence:
            await one_by_one.apply_pull(page)
        await at_once.apply_pull(merge_pull_pages(sequence))
        assert await _state(at_once) == await _state(one_by_one)

    anyio.run(run)


def test_a_merge_after_a_delete_recreates_the_record_and_cursors_take_the_highest() -> None:
    merged = merge_pull_pages(
        [
            PullPage({"notes": [{"id": "x", "a": 1}]}, cursors={"notes": 5}),
            PullPage(deleted={"notes": ["x"]}, merged={"notes": [{"id": "y", "a": 2}]}),
            PullPage(merged={"notes": [{"id": "x", "b": "p"}, {"id": "y", "b": "q"}]}),
            PullPage(cursors={"notes": 3}),
        ]
    )
    assert merged.records == {"notes": [{"id": "x", "b": "p"}]}
    assert merged.merged == {"notes": [{"id": "y", "a": 2, "b": "q"}]}
    assert merged.deleted == {} and merged.cursors == {"notes": 5}
