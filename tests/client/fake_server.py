"""An in-memory DataFn server behind ``httpx.MockTransport``, for the client's unit tests.

It follows PROTOCOL.md closely enough to exercise the client (seq counter, change log,
idempotent push with guards, paged clone, folded pull) and lets a test inject failures.
The real server is exercised by the end-to-end tests.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from datafn.client.store import apply_operation


@dataclass
class Change:
    seq: int
    resource: str
    record_id: str
    operation: str
    record: dict[str, Any] | None  # full record after insert/replace, delta for merge


@dataclass
class FakeServer:
    seq: int = 0
    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    done: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, Any]] = field(default_factory=list)
    #: endpoint → list of callables(payload) returning an httpx.Response or raising, used once each
    faults: dict[str, list[Callable[[Any], httpx.Response]]] = field(default_factory=dict)
    applied_count: int = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def table(self, resource: str) -> dict[str, dict[str, Any]]:
        return self.records.setdefault(resource, {})

    def fail(self, endpoint: str, response: Callable[[Any], httpx.Response]) -> None:
        self.faults.setdefault(endpoint, []).append(response)

    # -- server-side writes (another writer) ------------------------------------------------

    def write(self, resource: str, operation: str, record_id: str, record: Any = None) -> None:
        table = self.table(resource)
        current = table.get(record_id)
        if operation == "delete" and current is None:
            return
        after = apply_operation(current, operation, record_id, record)
        if after is None:
            table.pop(record_id, None)
        else:
            table[record_id] = after
        self.seq += 1
        stored = copy.deepcopy(after if operation in ("insert", "replace") else record)
        if stored is not None:
            stored["id"] = record_id
        self.changes.append(Change(self.seq, resource, record_id, operation, stored))

    # -- routes -------------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        endpoint = request.url.path.rsplit("/", 1)[-1]
        payload = json.loads(request.content) if request.content else None
        self.requests.append((endpoint, payload))
        faults = self.faults.get(endpoint)
        if faults:
            return faults.pop(0)(payload)
        try:
            result = getattr(self, f"do_{endpoint}")(payload)
        except _Error as exc:
            return httpx.Response(exc.status, json={"ok": False, "error": exc.body})
        return httpx.Response(200, json={"ok": True, "result": result})

    def do_status(self, payload: Any) -> Any:
        return {"schemaHash": "sha256:0", "capabilities": [], "limits": {}, "serverTimeMs": 0}

    def latest(self, resource: str) -> int:
        return max((c.seq for c in self.changes if c.resource == resource), default=0)

    def do_clone(self, payload: Any) -> Any:
        page = payload.get("page")
        tables = payload.get("tables") or list(self.records)
        data, cursors, nxt = {}, {}, {}
        for table in tables:
            rows = sorted(self.table(table).values(), key=lambda r: r["id"])
            cursors[table] = str(self.latest(table))
            if page and page["table"] == table:
                after = page.get("afterId")
                rows = [r for r in rows if after is None or r["id"] > after]
                limit = min(page.get("limit", 1000), 1000)
                rows = rows[:limit]
                nxt[table] = rows[-1]["id"] if len(rows) == limit else None
            data[table] = copy.deepcopy(rows)
        return {"data": data, "cursors": cursors, "next": nxt}

    def do_pull(self, payload: Any) -> Any:
        cursors = {r: int(c) for r, c in payload["cursors"].items()}
        limit = min(payload.get("limit") or 1000, 1000)
        pending = [c for c in self.changes if c.resource in cursors and c.seq > cursors[c.resource]]
        pending.sort(key=lambda c: (c.seq, c.resource, c.record_id))
        taken, more = pending[:limit], len(pending) > limit
        records: dict[str, dict[str, Any]] = {}
        merged: dict[str, dict[str, Any]] = {}
        deleted: dict[str, set[str]] = {}
        out_cursors = {r: str(c) for r, c in cursors.items()}
        for c in taken:
            key = f"{c.resource}\0{c.record_id}"
            out_cursors[c.resource] = str(c.seq)
            if c.operation in ("insert", "replace"):
                records[key] = copy.deepcopy(c.record)
                merged.pop(key, None)
                deleted.get(c.resource, set()).discard(c.record_id)
            elif c.operation == "merge":
                if key in records:
                    records[key].update(c.record)
                else:
                    merged.setdefault(key, {}).update(c.record)
            else:
                records.pop(key, None)
                merged.pop(key, None)
                deleted.setdefault(c.resource, set()).add(c.record_id)

        def group(items: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
            out: dict[str, list[dict[str, Any]]] = {}
            for key in sorted(items):
                out.setdefault(key.split("\0")[0], []).append(items[key])
            return out

        return {
            "records": group(records),
            "merged": group(merged),
            "deleted": {r: sorted(ids) for r, ids in deleted.items()},
            "cursors": out_cursors,
            "hasMore": more,
        }

    def do_push(self, payload: Any) -> Any:
        before = self.seq
        applied, errors, touched = [], [], {}
        for m in payload["mutations"]:
            key = (m["clientId"], m["mutationId"])
            if key in self.done:
                outcome = self.done[key]
            else:
                outcome = self.apply(m)
                if outcome.get("retryable") is not True:
                    self.done[key] = outcome
            if outcome["ok"]:
                applied.append(m["mutationId"])
                touched[m["resource"]] = str(self.latest(m["resource"]))
            else:
                errors.append({"mutationId": m["mutationId"], **outcome["error"]})
        return {
            "ok": not errors,
            "applied": applied,
            "errors": errors,
            "cursor": str(self.seq),
            "cursorBefore": str(before),
            "cursors": touched,
        }

    def apply(self, m: dict[str, Any]) -> dict[str, Any]:
        table = self.table(m["resource"])
        current = table.get(m["id"])
        guard = m.get("if")
        if guard is not None and (
            current is None or any(current.get(k) != v for k, v in guard.items())
        ):
            return _failure("CONFLICT", "the guard does not hold", "if")
        if m["operation"] == "insert" and current is not None:
            record = dict(m["record"], id=m["id"])
            if record == current:
                return {"ok": True}
            return _failure("CONFLICT", "the record exists", "id")
        self.write(m["resource"], m["operation"], m["id"], m.get("record"))
        self.applied_count += 1
        return {"ok": True}

    def do_reconcile(self, payload: Any) -> Any:
        return {"counts": {r: len(self.table(r)) for r in payload["resources"]}}

    def do_seed(self, payload: Any) -> Any:
        inserted = {}
        for resource, rows in payload["data"].items():
            n = 0
            for row in rows:
                if row["id"] not in self.table(resource):
                    self.write(resource, "insert", row["id"], row)
                    n += 1
            inserted[resource] = n
        return {"inserted": inserted}


class _Error(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body


def _failure(code: str, message: str, path: str, retryable: bool = False) -> dict[str, Any]:
    return {
        "ok": False,
        "retryable": retryable,
        "error": {"code": code, "message": message, "path": path, "retryable": retryable},
    }


def envelope_error(status: int, code: str, message: str = "boom", path: str = "$") -> Any:
    """A fault that answers a failure envelope."""

    def respond(payload: Any) -> httpx.Response:
        return httpx.Response(
            status,
            json={
                "ok": False,
                "error": {"code": code, "message": message, "details": {"path": path}},
            },
        )

    return respond


def unreachable(payload: Any) -> httpx.Response:
    """A fault that behaves like a refused connection."""
    raise httpx.ConnectError("connection refused")
