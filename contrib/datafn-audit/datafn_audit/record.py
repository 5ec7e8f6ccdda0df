"""Build the audit record of one sync operation from what the policy hooks see.

A record is a flat JSON object, one per line::

    {"time": "2025-01-31T12:00:00.123456+00:00", "phase": "push", "side": "client",
     "client_id": "client:…", "namespace": null, "subject": null, "resources": ["todos"],
     "counts": {"mutations": 3, "applied": 3, "errors": 0},
     "cursors_before": {"$": "41"}, "cursors_after": {"$": "44", "todos": "44"},
     "duration": 0.0123, "outcome": "ok"}

``counts`` and the cursors depend on the phase (``"$"`` is the namespace-wide cursor):

============  ==========================================  ================  ===============
phase         counts                                      cursors_before    cursors_after
============  ==========================================  ================  ===============
push,         mutations, applied, errors                  ``$``: cursor-    ``$`` and per
clone_up                                                  Before            resource
pull          records, merged, deleted                    the request's     the answer's
clone         records                                     —                 the answer's
reconcile     one count per resource (the server's)       —                 —
seed          records (sent), inserted                    —                 —
============  ==========================================  ================  ===============

``outcome`` is ``ok``; for a push, ``partial`` when some mutations were refused and
``rejected`` when all were; ``failed`` or ``vetoed`` for a client operation that did not
complete (recorded from the ``sync_failed`` event, with ``error``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from datafn import SyncContext

__all__ = ["build_record", "failure_record", "wire"]


def wire(value: Any) -> Any:
    """The wire form of a result: the client hands over typed models, the server dicts."""
    to_wire = getattr(value, "to_wire", None)
    if callable(to_wire):
        return to_wire()
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(by_alias=True)
    return value


def now() -> str:
    return datetime.now(UTC).isoformat()


def build_record(
    phase: str,
    payload: Any,
    result: Any,
    context: SyncContext,
    duration: float | None,
) -> dict[str, Any]:
    payload = _dict(payload)
    result = _dict(wire(result))
    counts: dict[str, Any] = {}
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    outcome = "ok"
    if phase in ("push", "clone_up"):
        applied, errors = _list(result.get("applied")), _list(result.get("errors"))
        counts = {
            "mutations": len(_list(payload.get("mutations"))),
            "applied": len(applied),
            "errors": len(errors),
        }
        if errors:
            outcome = "partial" if applied else "rejected"
        before = {"$": result.get("cursorBefore")}
        after = {"$": result.get("cursor"), **_dict(result.get("cursors"))}
    elif phase == "pull":
        counts = {
            key: sum(len(_list(items)) for items in _dict(result.get(key)).values())
            for key in ("records", "merged", "deleted")
        }
        before = dict(_dict(payload.get("cursors")))
        after = dict(_dict(result.get("cursors")))
    elif phase == "clone":
        counts = {"records": sum(len(_list(items)) for items in _dict(result.get("data")).values())}
        after = dict(_dict(result.get("cursors")))
    elif phase == "reconcile":
        counts = dict(_dict(result.get("counts")))
    elif phase == "seed":
        counts = {
            "records": sum(len(_list(items)) for items in _dict(payload.get("data")).values()),
            "inserted": sum(
                n for n in _dict(result.get("inserted")).values() if isinstance(n, int)
            ),
        }
    record = _base(phase, context)
    record.update(
        counts=counts,
        cursors_before=before,
        cursors_after=after,
        duration=round(duration, 6) if duration is not None else None,
        outcome=outcome,
    )
    return record


def failure_record(phase: str, context: SyncContext, error: BaseException | None) -> dict[str, Any]:
    from datafn import SyncVetoed

    record = _base(phase, context)
    vetoed = isinstance(error, SyncVetoed)
    record.update(
        counts={},
        cursors_before=None,
        cursors_after=None,
        duration=None,
        outcome="vetoed" if vetoed else "failed",
        error=str(error) if error is not None else None,
    )
    if vetoed:
        assert isinstance(error, SyncVetoed)
        record["plugin"] = error.plugin
        rule = getattr(error.veto, "rule", None)
        if rule is not None:
            record["rule"] = rule
    return record


def _base(phase: str, context: SyncContext) -> dict[str, Any]:
    return {
        "time": now(),
        "phase": phase,
        "side": context.side,
        "client_id": context.client_id,
        "namespace": context.namespace,
        "subject": context.identity.subject if context.identity is not None else None,
        "resources": list(context.resources),
    }


def _list(value: Any) -> Sequence[Any]:
    return value if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else []


def _dict(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}
