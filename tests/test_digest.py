"""The canonical form and digests of datafn.digest: what another implementation must match."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import pytest

from datafn.digest import (
    EMPTY_DIGEST,
    DigestRange,
    canonical_record,
    fetch_batches,
    parts_of,
    record_digest,
    split_range,
)

FIELDS = frozenset({"id", "title", "n", "meta", "tags"})


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"id": "a", "title": "x"}, b'{"id":"a","title":"x"}'),
        ({"title": "x", "id": "a"}, b'{"id":"a","title":"x"}'),  # keys sorted
        ({"id": "a", "title": None}, b'{"id":"a"}'),  # null member = absent
        ({"id": "a", "n": 1.0}, b'{"id":"a","n":1}'),  # integral number as integer
        ({"id": "a", "n": -0.0}, b'{"id":"a","n":0}'),
        ({"id": "a", "n": 0.1}, b'{"id":"a","n":0.1}'),
        ({"id": "a", "n": 1.5e-7}, b'{"id":"a","n":1.5e-7}'),
        ({"id": "a", "n": 1e300}, b'{"id":"a","n":1e+300}'),
        ({"id": "a", "n": 2**60}, b'{"id":"a","n":1.152921504606847e+18}'),  # beyond 2^53
        ({"id": "a", "n": True}, b'{"id":"a","n":true}'),
        ({"id": "a", "meta": {"b": None, "a": [None, 2.0]}}, b'{"id":"a","meta":{"a":[null,2]}}'),
        ({"id": "a", "title": "é\n\x01"}, '{"id":"a","title":"é\\n\\u0001"}'.encode()),
        ({"id": "a", "_datafn_rev": 3, "local": 1}, b'{"id":"a"}'),  # undeclared keys left out
    ],
)
def test_canonical_form(record: dict[str, Any], expected: bytes) -> None:
    assert canonical_record(record, FIELDS) == expected


def test_the_record_digest_is_sha256_of_the_canonical_form_cut_to_16_bytes() -> None:
    record = {"id": "a", "title": "x", "n": 2.0}
    assert (
        record_digest(record, FIELDS)
        == hashlib.sha256(b'{"id":"a","n":2,"title":"x"}').digest()[:16]
    )
    assert record_digest(record, FIELDS).hex() == "b3add22b02f2518e0868f5db4eb9bc7f"
    assert hashlib.sha256(b"").hexdigest()[:32] == EMPTY_DIGEST


def _reader(records: Sequence[Mapping[str, Any]]) -> Any:
    ordered = sorted(records, key=lambda r: r["id"])

    async def read(after: str | None, until: str | None, limit: int) -> Any:
        rows = [
            r
            for r in ordered
            if (after is None or r["id"] > after) and (until is None or r["id"] <= until)
        ]
        return rows[:limit], (rows[limit - 1]["id"] if len(rows) > limit else None)

    return read


def test_server_parts_and_client_parts_agree_and_point_at_the_difference() -> None:
    server = [{"id": f"r{i:03d}", "title": str(i)} for i in range(100)]
    client = [dict(r) for r in server]
    client[57]["title"] = "drifted"

    async def main() -> None:
        answer = await split_range(_reader(server), FIELDS, None, None, 100, 8)
        assert answer.count == 100
        assert [p.count for p in answer.parts] == [13] * 7 + [9]
        assert answer.parts[-1].until is None
        local = await parts_of(_reader(client), FIELDS, None, [p.until for p in answer.parts])
        differing = [
            i
            for i, (p, mine) in enumerate(zip(answer.parts, local, strict=True))
            if p.hash != mine.hexdigest()
        ]
        assert differing == [4]  # r052..r064
        same = await parts_of(_reader(server), FIELDS, None, [p.until for p in answer.parts])
        assert [h.hexdigest() for h in same] == [p.hash for p in answer.parts]

    anyio.run(main)


def test_a_low_count_hint_puts_the_rest_in_the_last_part() -> None:
    records = [{"id": f"r{i:03d}"} for i in range(50)]

    async def main() -> None:
        answer = await split_range(_reader(records), FIELDS, None, "r040", 8, 4)
        assert [p.count for p in answer.parts] == [2, 2, 2, 35]
        assert answer.count == 41

    anyio.run(main)


def test_fetch_batches_are_bounded() -> None:
    ranges = [(DigestRange(after=str(i), until=str(i + 1)), 40) for i in range(100)]
    batches = fetch_batches(ranges, 1000)
    assert [len(b) for b in batches] == [25, 25, 25, 25]
    many = fetch_batches([(DigestRange(), 1)] * 200, 1000)
    assert [len(b) for b in many] == [64, 64, 64, 8]
