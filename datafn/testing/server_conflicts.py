"""The conflict part of the server store conformance suite (docs/concepts.md, "Conflicts").

:class:`ConflictSuite` is a base of :class:`datafn.testing.server_store.ServerStoreSuite`, so
every store that runs the suite runs these tests too: detection of a write with a
``baseSeq`` against the changes of other clients, each policy, the resolver hook, and the
provenance every change-log row keeps.
"""

from __future__ import annotations

from typing import Any

from datafn.server.mutations import MAX_CONFLICT_HISTORY, ConflictRules
from datafn.server.store import PendingMutation, ServerStore

__all__ = ["ConflictSuite", "write"]


def write(
    op: str,
    record_id: str,
    record: dict[str, Any] | None = None,
    *,
    base: int | None = None,
    mid: str,
    resource: str = "todos",
) -> PendingMutation:
    """A validated mutation with a ``baseSeq``, as the server hands it to a store."""
    if record is not None:
        record = {"id": record_id, **record}
    return PendingMutation(
        mutation_id=mid,
        resource=resource,
        operation=op,  # type: ignore[arg-type]
        id=record_id,
        record=record,
        base_seq=base,
    )


async def _record(store: ServerStore, record_id: str) -> dict[str, Any] | None:
    rows = await store.clone_page("ns", "todos", None, 100_000)
    return next((dict(r) for r in rows if r["id"] == record_id), None)


class ConflictSuite:
    """Conflict detection and settlement every store must have (uses the ``store`` fixture
    of :class:`~datafn.testing.server_store.ServerStoreSuite`)."""

    @staticmethod
    async def _edited_by_two(store: ServerStore) -> None:
        """c0 creates ``a`` (seq 1), c2 sets its title having seen it (seq 2)."""
        await store.apply_push("ns", "c0", [write("insert", "a", {"title": "t0"}, mid="m0")])
        outcome = await store.apply_push(
            "ns", "c2", [write("merge", "a", {"title": "theirs"}, base=1, mid="m2")]
        )
        assert outcome.results == [None] and outcome.conflicts == {}

    async def test_conflict_last_writer_wins_is_applied_and_reported(
        self, store: ServerStore
    ) -> None:
        await self._edited_by_two(store)
        outcome = await store.apply_push(
            "ns", "c1", [write("merge", "a", {"title": "ours", "done": True}, base=1, mid="m1")]
        )
        assert outcome.results == [None]
        expected = {
            "fields": ["title"],
            "baseSeq": 1,
            "seq": 2,
            "clientId": "c2",
            "previous": {"title": "theirs"},
            "resolution": "last-writer-wins",
            "winningSeq": 3,
        }
        assert outcome.conflicts == {0: expected}
        assert await _record(store, "a") == {"id": "a", "title": "ours", "done": True}
        changes = await store.changes_since("ns", {"todos": 0}, 10)
        assert [(c.seq, c.client_id, c.conflict) for c in changes] == [
            (1, "c0", None),
            (2, "c2", None),
            (3, "c1", expected),
        ]
        # a replay of the write reports the same conflict and applies nothing
        replay = await store.apply_push(
            "ns", "c1", [write("merge", "a", {"title": "ours", "done": True}, base=1, mid="m1")]
        )
        assert replay.results == [None] and replay.conflicts == {0: expected}
        assert replay.cursor == replay.cursor_before == 3
        # c1 writes the title again before pulling: c2's title was overwritten once, and
        # reported then; in one batch likewise
        again = await store.apply_push(
            "ns", "c1", [write("merge", "a", {"title": "ours 2"}, base=1, mid="m1b")]
        )
        assert again.results == [None] and again.conflicts == {}
        await store.apply_push(
            "ns", "c2", [write("merge", "a", {"title": "theirs 2"}, base=4, mid="m2b")]
        )
        batch = await store.apply_push(
            "ns",
            "c1",
            [
                write("merge", "a", {"title": "ours 3"}, base=4, mid="m1c"),
                write("merge", "a", {"title": "ours 4"}, base=4, mid="m1d"),
            ],
        )
        assert list(batch.conflicts) == [0] and batch.conflicts[0]["seq"] == 5

    async def test_conflict_needs_a_shared_field_another_client_and_a_base(
        self, store: ServerStore
    ) -> None:
        await self._edited_by_two(store)
        outcome = await store.apply_push(
            "ns",
            "c1",
            [
                # another field than c2 changed: no conflict
                write("merge", "a", {"done": True}, base=1, mid="m1"),
                # c1's own change after its base (seq 3): no conflict
                write("merge", "a", {"done": False}, base=2, mid="m2"),
                # no baseSeq (the TypeScript client): no detection, last writer wins
                write("merge", "a", {"title": "blind"}, mid="m3"),
            ],
        )
        assert outcome.results == [None, None, None]
        assert outcome.conflicts == {}
        # the same client's two writes made offline with one base: no conflict
        again = await store.apply_push(
            "ns",
            "c1",
            [
                write("merge", "a", {"title": "x"}, base=2, mid="m4"),
                write("merge", "a", {"title": "y"}, base=2, mid="m5"),
            ],
        )
        assert again.results == [None, None] and again.conflicts == {}
        assert await _record(store, "a") == {"id": "a", "title": "y", "done": False}

    async def test_conflict_reject_refuses_with_the_current_record(
        self, store: ServerStore
    ) -> None:
        store.conflict_rules = ConflictRules(policies={"todos": "reject"})
        await self._edited_by_two(store)
        outcome = await store.apply_push(
            "ns", "c1", [write("replace", "a", {"title": "ours"}, base=1, mid="m1")]
        )
        [error] = outcome.results
        assert error is not None and error.code == "CONFLICT" and not error.retryable
        assert error.path == "baseSeq"
        assert error.details == {
            "fields": ["title"],
            "baseSeq": 1,
            "seq": 2,
            "clientId": "c2",
            "current": {"id": "a", "title": "theirs"},
        }
        assert outcome.cursor == outcome.cursor_before == 2 and outcome.conflicts == {}
        assert await _record(store, "a") == {"id": "a", "title": "theirs"}
        # replayed: the same refusal, details included
        replay = await store.apply_push(
            "ns", "c1", [write("replace", "a", {"title": "ours"}, base=1, mid="m1")]
        )
        assert replay.results == [error]
        assert replay.results[0] is not None and replay.results[0].details == error.details
        # written again on top of what it saw: applied
        again = await store.apply_push(
            "ns", "c1", [write("merge", "a", {"title": "merged"}, base=2, mid="m2")]
        )
        assert again.results == [None]
        # another resource keeps the default (last writer wins)
        await store.apply_push(
            "ns", "c0", [write("insert", "n", {"body": "b"}, mid="n0", resource="notes")]
        )
        await store.apply_push(
            "ns", "c2", [write("merge", "n", {"body": "c2"}, base=4, mid="n2", resource="notes")]
        )
        notes = await store.apply_push(
            "ns", "c1", [write("merge", "n", {"body": "c1"}, base=4, mid="n1", resource="notes")]
        )
        assert notes.results == [None] and notes.conflicts[0]["fields"] == ["body"]

    async def test_conflict_resolver_merges_a_counter(self, store: ServerStore) -> None:
        calls: list[dict[str, Any]] = []

        def add_ranks(**arguments: Any) -> dict[str, Any] | None:
            calls.append(arguments)
            if "rank" not in arguments["fields"]:
                return None
            current, incoming = arguments["current"], arguments["incoming"]
            return {"rank": current["rank"] + incoming["rank"]}

        store.conflict_rules = ConflictRules(policies={"todos": "reject"}, resolver=add_ranks)
        await store.apply_push("ns", "c0", [write("insert", "a", {"rank": 0}, mid="m0")])
        await store.apply_push("ns", "c2", [write("merge", "a", {"rank": 2}, base=1, mid="m2")])
        outcome = await store.apply_push(
            "ns", "c1", [write("merge", "a", {"rank": 3}, base=1, mid="m1")]
        )
        assert outcome.results == [None]
        assert outcome.conflicts[0]["resolution"] == "resolver"
        assert await _record(store, "a") == {"id": "a", "rank": 5}
        assert calls == [
            {
                "resource": "todos",
                "record_id": "a",
                "operation": "merge",
                "fields": ["rank"],
                "current": {"id": "a", "rank": 2},
                "incoming": {"id": "a", "rank": 3},
                "base_seq": 1,
                "client_id": "c1",
                "other_client_id": "c2",
            }
        ]
        # the resolver passes (None): the resource's policy decides
        await store.apply_push("ns", "c2", [write("merge", "a", {"title": "x"}, base=3, mid="t2")])
        refused = await store.apply_push(
            "ns", "c1", [write("merge", "a", {"title": "y"}, base=3, mid="t1")]
        )
        assert refused.results[0] is not None and refused.results[0].code == "CONFLICT"

    async def test_conflict_with_a_delete_of_another_client(self, store: ServerStore) -> None:
        await self._edited_by_two(store)
        await store.apply_push("ns", "c2", [write("delete", "a", base=2, mid="d2")])
        outcome = await store.apply_push(
            "ns", "c1", [write("merge", "a", {"title": "ours"}, base=1, mid="m1")]
        )
        assert outcome.results == [None]
        conflict = outcome.conflicts[0]
        assert conflict["fields"] == ["title"] and conflict["seq"] == 3
        assert conflict["clientId"] == "c2" and conflict["previous"] is None
        assert await _record(store, "a") == {"id": "a", "title": "ours", "done": False}

    async def test_conflict_past_the_history_read_counts_every_field(
        self, store: ServerStore
    ) -> None:
        await store.apply_push("ns", "c0", [write("insert", "a", {"title": "t"}, mid="m0")])
        many = MAX_CONFLICT_HISTORY + 5
        await store.apply_push(
            "ns",
            "c2",
            [write("merge", "a", {"rank": n}, base=1, mid=f"r{n}") for n in range(many)],
        )
        # c2 only changed rank, but past the rows read nothing is known: title counts
        outcome = await store.apply_push(
            "ns", "c1", [write("merge", "a", {"title": "ours"}, base=1, mid="m1")]
        )
        assert outcome.results == [None]
        assert outcome.conflicts[0]["fields"] == ["title"]
        assert outcome.conflicts[0]["seq"] == 1 + many
        # a base inside the rows read: only what they show (rank), so no conflict on title
        near = await store.apply_push(
            "ns", "c1", [write("merge", "a", {"title": "x"}, base=many - 10, mid="m2")]
        )
        assert near.results == [None] and near.conflicts == {}
