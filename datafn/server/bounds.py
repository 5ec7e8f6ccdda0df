"""Cheap bounds on a request body, checked before it is validated.

Validation costs about a microsecond per JSON value and pydantic reports every wrong item of a
list, so what a body may hold is bounded first, in time proportional to the bound rather than
to the body: the lists of resource names (``tables``, ``resources``, the keys of ``cursors``
and of seed ``data``) by the number of resources in the schema, the records of a seed by
``max-seed-records``, and the whole body by ``max-body-nodes`` JSON values. Every refusal is a
``LIMIT_EXCEEDED`` validation error with the path where the bound was crossed.
"""

from __future__ import annotations

from typing import Any

from datafn.config import LimitsSettings
from datafn.errors import ValidationFailed
from datafn.schema import _join_path

__all__ = ["check_request_bounds", "count_json_values", "most_json_values"]


#: Pull cursor keys that are not resources (see :func:`datafn.server.service.is_feed_key`),
#: and how many of them a pull may name.
_FEED_PREFIXES = ("__datafn_", "join_")
MAX_FEED_KEYS = 256


def _exceeded(message: str, path: str) -> ValidationFailed:
    return ValidationFailed(message, code="LIMIT_EXCEEDED", path=path)


def most_json_values(size: int) -> int:
    """The most JSON values a JSON text of ``size`` bytes can hold: every value takes at least
    one byte and is separated from the next by at least one (``[1,1,1]``: 7 bytes, 4 values
    with the array), so a body that small cannot exceed a node limit and need not be walked."""
    return (size + 1) // 2


def check_request_bounds(
    action: str,
    payload: Any,
    *,
    resources: int,
    limits: LimitsSettings,
    size: int | None = None,
) -> None:
    """Refuse a body of ``action`` that holds more than the bounds allow (see the module).

    ``size``: the body's length in bytes, when it was JSON text; a body too short to hold more
    than ``max-body-nodes`` values (:func:`most_json_values`) is not counted value by value.
    """
    if not isinstance(payload, dict):
        return
    names = {"clone": "tables", "reconcile": "resources", "pull": "cursors", "seed": "data"}
    key = names.get(action)
    listed = payload.get(key) if key else None
    named = len(listed) if isinstance(listed, list | dict) else 0
    if action == "pull" and isinstance(listed, dict):
        # the original client's actor feed and join-store cursors are not resources
        extra = sum(1 for k in listed if isinstance(k, str) and k.startswith(_FEED_PREFIXES))
        if extra > MAX_FEED_KEYS:
            raise _exceeded(f"cursors names at most {MAX_FEED_KEYS} join stores", "cursors")
        named -= extra
    if named > resources:
        raise _exceeded(
            f"{key} names at most {resources} resources (the schema has {resources}), got {named}",
            key or "$",
        )
    if action == "seed" and isinstance(listed, dict):
        total = 0
        for name, records in listed.items():
            if isinstance(records, list):
                total += len(records)
                if total > limits.max_seed_records:
                    raise _exceeded(
                        f"a seed holds at most {limits.max_seed_records} records",
                        _join_path("data", [name]),
                    )
    if size is None or most_json_values(size) > limits.max_body_nodes:
        count_json_values(payload, limit=limits.max_body_nodes)


def count_json_values(value: Any, *, limit: int, path: str = "") -> int:
    """The number of JSON values in ``value`` (containers and scalars, the root included).

    Stops at the first value past ``limit`` and raises ``LIMIT_EXCEEDED`` at its path, so the
    cost is bounded by ``limit`` whatever the size of ``value``. Iterative; the path is built
    only when raising.
    """
    count = 1
    if not isinstance(value, dict | list):
        return count
    frames: list[Any] = [iter(value.items()) if isinstance(value, dict) else enumerate(value)]
    trail: list[str | int] = [0]
    while frames:
        for key, item in frames[-1]:
            count += 1
            if count > limit:
                trail[-1] = key
                raise _exceeded(
                    f"the request body holds more than {limit} JSON values",
                    _join_path(path, trail),
                )
            if isinstance(item, dict | list) and item:
                trail[-1] = key
                frames.append(iter(item.items()) if isinstance(item, dict) else enumerate(item))
                trail.append(0)
                break
        else:
            frames.pop()
            trail.pop()
    return count
