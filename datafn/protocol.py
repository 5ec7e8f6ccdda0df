"""Typed models of every request, response and WebSocket message of the DataFn wire protocol.

Python attributes are snake_case; on the wire every key is camelCase. ``Model.from_wire(data)``
parses a decoded JSON body and raises only :class:`~datafn.errors.ValidationFailed`
(``DFQL_INVALID``, with a path such as ``mutations[3].mutationId``), whatever the input;
``model.to_wire()`` gives the JSON-ready dict. Unknown top-level keys are ignored for forward
compatibility; the keys of records are checked by :mod:`datafn.schema`, not here.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from datafn.errors import TransportError, ValidationFailed, error_from_envelope
from datafn.schema import (
    MAX_DEPTH,
    MAX_ID_LENGTH,
    _describe,
    _first_error,
    _join_path,
    _PathedValueError,
    check_json_value,
)

__all__ = [
    "ACTIONS",
    "CAPABILITIES",
    "MAX_BODY_DEPTH",
    "MAX_CURSOR",
    "ClonePage",
    "CloneRequest",
    "CloneResult",
    "Cursor",
    "CursorMessage",
    "GlobalPullRequest",
    "HelloMessage",
    "Mutation",
    "Operation",
    "PullRequest",
    "PullResult",
    "PushError",
    "PushRequest",
    "PushResult",
    "ReconcileRequest",
    "ReconcileResult",
    "SeedClientRequest",
    "SeedRequest",
    "SeedResult",
    "StatusResult",
    "WireModel",
    "format_cursor",
    "parse_cursor",
    "parse_envelope",
    "parse_ws_message",
    "success_envelope",
]

#: The actions of the protocol, one per route.
ACTIONS = ("status", "clone", "pull", "push", "reconcile", "seed")

#: The capabilities a server announces in ``status``.
CAPABILITIES = ("sync.clone", "sync.pull", "sync.push", "sync.reconcile", "sync.seed")

#: Deepest nesting accepted in a whole request body (records sit a few levels down).
MAX_BODY_DEPTH = MAX_DEPTH + 8

_MAX_INT = 2**63 - 1
_CURSOR_RE = re.compile(r"(?:0|[1-9][0-9]{0,19})")

# --------------------------------------------------------------------------- cursors


#: The largest cursor: seqs are signed 64-bit integers in every store.
MAX_CURSOR = 2**63 - 1


def _in_range(text: str) -> bool:
    return int(text) <= MAX_CURSOR


def parse_cursor(value: Any, path: str = "$") -> int:
    """The integer of a wire cursor (``"0"``, ``"42"``); ``DFQL_INVALID`` at ``path`` otherwise."""
    if isinstance(value, str) and _CURSOR_RE.fullmatch(value) and _in_range(value):
        return int(value)
    raise ValidationFailed(
        f"a cursor must be a base-10 non-negative integer string, got {_describe(value)}",
        code="DFQL_INVALID",
        path=path,
    )


def format_cursor(n: int) -> str:
    """The wire form of cursor ``n`` (a non-negative integer)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"a cursor is a non-negative integer, got {n!r}")
    text = str(n)
    if n > MAX_CURSOR:
        raise ValueError(f"a cursor is at most {MAX_CURSOR}")
    return text


def _to_cursor(value: Any) -> str:
    # Accept a JSON number too (a lenient peer may send one) and normalise it to the string.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_CURSOR:
        return str(value)
    if isinstance(value, str) and _CURSOR_RE.fullmatch(value) and _in_range(value):
        return value
    raise ValueError(
        "a cursor must be a base-10 non-negative integer string of at most "
        f"{MAX_CURSOR}, got {_describe(value)}"
    )


#: A cursor on the wire: a base-10 non-negative integer string of at most 20 digits.
Cursor = Annotated[str, BeforeValidator(_to_cursor)]

ClientId = Annotated[str, Field(min_length=1, max_length=255)]
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
PositiveInt = Annotated[int, Field(ge=1, le=_MAX_INT)]
NonNegativeInt = Annotated[int, Field(ge=0, le=_MAX_INT)]
Record = dict[str, Any]
Operation = Literal["insert", "merge", "replace", "delete"]

# --------------------------------------------------------------------------- base model

_M = TypeVar("_M", bound="WireModel")


class WireModel(BaseModel):
    """Base of every wire model: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        strict=True,
        frozen=True,
        extra="ignore",
        alias_generator=to_camel,
        populate_by_name=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready wire form (camelCase keys, ``None`` fields omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def from_wire(
        cls: type[_M], data: Any, *, path_prefix: str = "", json_checked: bool = False
    ) -> _M:
        """Parse a decoded JSON value; raises only ``ValidationFailed`` (``DFQL_INVALID``).

        ``json_checked``: ``data`` is part of a body :func:`check_json_value` already walked
        (the items of a push), so it is not walked again.
        """
        if isinstance(data, cls):
            return data
        root = path_prefix or "$"
        if not isinstance(data, dict):
            raise ValidationFailed(
                f"expected an object, got {_describe(data)}", code="DFQL_INVALID", path=root
            )
        if not json_checked:
            check_json_value(data, path=path_prefix, max_depth=MAX_BODY_DEPTH)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            loc, message = _first_error(exc)
            raise ValidationFailed(
                message, code="DFQL_INVALID", path=_join_path(path_prefix, loc)
            ) from None
        except (ValueError, TypeError, RecursionError, OverflowError) as exc:
            # Defensive: the boundary must only ever report a validation failure.
            raise ValidationFailed(
                f"invalid body: {type(exc).__name__}", code="DFQL_INVALID", path=root
            ) from None


# --------------------------------------------------------------------------- requests


class ClonePage(WireModel):
    table: str
    after_id: str | None = None
    limit: PositiveInt = 1000


class CloneRequest(WireModel):
    client_id: ClientId
    tables: list[str] | None = None
    page: ClonePage | None = None


class PullRequest(WireModel):
    client_id: ClientId
    cursors: dict[str, Cursor]
    limit: PositiveInt | None = None


class GlobalPullRequest(WireModel):
    """The second pull form (the original client's cloneUp): one cursor over every resource,
    answered with ``{changes: [{serverSeq, resource, id, op, record}], nextCursor}``."""

    client_id: ClientId
    cursor: Cursor
    limit: PositiveInt | None = None


class SeedClientRequest(WireModel):
    """The original's seed form: ``{clientId}`` marks the namespace seeded, writes no data."""

    client_id: ClientId


_NEEDS_RECORD = frozenset({"insert", "merge", "replace"})


class Mutation(WireModel):
    resource: str
    version: PositiveInt = 1
    operation: Operation
    id: Identifier
    record: Record | None = None
    client_id: ClientId
    mutation_id: Identifier
    if_: Record | None = Field(default=None, alias="if")
    #: the writer had seen every change up to this seq (conflict detection; None: none)
    base_seq: NonNegativeInt | None = None

    @model_validator(mode="after")
    def _check_record(self) -> Mutation:
        if self.operation in _NEEDS_RECORD:
            if self.record is None:
                raise _PathedValueError(f"operation {self.operation!r} needs a record", ("record",))
            record_id = self.record.get("id")
            if record_id is not None and record_id != self.id:
                raise _PathedValueError(
                    "the record id differs from the mutation id", ("record", "id")
                )
        return self


class PushRequest(WireModel):
    """A push: the request is checked as a whole (its client id, each mutation's client id
    equal to it); each mutation is parsed on its own (:class:`Mutation`), so one the server
    cannot perform is refused alone."""

    client_id: ClientId
    mutations: list[Any]

    @model_validator(mode="after")
    def _check_client_ids(self) -> PushRequest:
        for index, mutation in enumerate(self.mutations):
            if isinstance(mutation, dict) and mutation.get("clientId", self.client_id) != (
                self.client_id
            ):
                raise _PathedValueError(
                    "the mutation's clientId differs from the request's clientId",
                    ("mutations", index, "clientId"),
                )
        return self


class ReconcileRequest(WireModel):
    client_id: ClientId
    resources: list[str]


class SeedRequest(WireModel):
    data: dict[str, list[Record]]


# --------------------------------------------------------------------------- responses


class StatusResult(WireModel):
    schema_hash: str
    capabilities: list[str]
    limits: dict[str, int]
    server_time_ms: int
    #: the server's schema (datafn servers send it; the original does not)
    server_schema: dict[str, Any] | None = Field(default=None, alias="schema")


class CloneResult(WireModel):
    data: dict[str, list[Record]]
    cursors: dict[str, Cursor]
    next: dict[str, str | None] | None = None
    paginated: bool | None = None


class PullResult(WireModel):
    records: dict[str, list[Record]] = Field(default_factory=dict)
    merged: dict[str, list[Record]] = Field(default_factory=dict)
    deleted: dict[str, list[str]] = Field(default_factory=dict)
    cursors: dict[str, Cursor]
    has_more: bool = False
    #: the conflicts the changes of this answer overwrote (datafn servers; docs/protocol.md)
    conflicts: list[Record] | None = None


class PushError(WireModel):
    mutation_id: str
    code: str
    message: str
    path: str = "$"
    retryable: bool = False
    details: Record | None = None


class PushResult(WireModel):
    ok: bool
    applied: list[str]
    errors: list[PushError]
    cursor: Cursor
    cursor_before: Cursor
    cursors: dict[str, Cursor]
    #: the conflicts applied mutations overwrote (datafn servers; docs/protocol.md)
    conflicts: list[Record] | None = None


class ReconcileResult(WireModel):
    counts: dict[str, NonNegativeInt]


class SeedResult(WireModel):
    inserted: dict[str, NonNegativeInt]


# --------------------------------------------------------------------------- envelopes


def success_envelope(result: WireModel | dict[str, Any]) -> dict[str, Any]:
    """``{"ok": true, "result": ...}`` for a result model or a ready dict."""
    body = result.to_wire() if isinstance(result, WireModel) else result
    return {"ok": True, "result": body}


def parse_envelope(body: Any, result_model: type[_M], *, http_status: int | None = None) -> _M:
    """The result of a success envelope, parsed as ``result_model``.

    A failure envelope raises the matching :class:`~datafn.errors.ProtocolError`; a body that is
    no envelope, or a success whose result does not fit ``result_model``, raises
    :class:`~datafn.errors.TransportError` (the server, not the request, is at fault).
    """
    if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
        raise TransportError(
            f"the server answered something that is not a DataFn envelope ({_describe(body)})",
            http_status=http_status,
        )
    if body["ok"]:
        if "result" not in body or "error" in body:
            raise TransportError(
                "the server answered a success envelope without a result",
                http_status=http_status,
            )
        try:
            return result_model.from_wire(body["result"], path_prefix="result")
        except ValidationFailed as exc:
            raise TransportError(
                f"the server answered a malformed result: {exc.message}",
                path=exc.path,
                http_status=http_status,
            ) from None
    error = body.get("error")
    if not isinstance(error, dict) or "result" in body:
        raise TransportError(
            "the server answered a failure envelope without an error object",
            http_status=http_status,
        )
    raise error_from_envelope(error, http_status=http_status)


# --------------------------------------------------------------------------- WebSocket


class HelloMessage(WireModel):
    """Client → server on every open: who it is and its per-resource cursors."""

    type: Literal["hello"] = "hello"
    client_id: ClientId
    cursors: dict[str, Cursor] = Field(default_factory=dict)


class CursorMessage(WireModel):
    """Server → client after changes commit: the namespace's latest serverSeq."""

    type: Literal["cursor"] = "cursor"
    cursor: Cursor


_WS_MODELS: dict[str, type[HelloMessage] | type[CursorMessage]] = {
    "hello": HelloMessage,
    "cursor": CursorMessage,
}


def parse_ws_message(data: Any) -> HelloMessage | CursorMessage | None:
    """Parse a WebSocket message (decoded JSON, or its text); None if not understood."""
    try:
        if isinstance(data, bytes | bytearray):
            data = data.decode("utf-8")
        if isinstance(data, str):
            data = json.loads(data)
        if not isinstance(data, dict):
            return None
        model = _WS_MODELS.get(data.get("type"))  # type: ignore[arg-type]
        if model is None:
            return None
        return model.from_wire(data)
    except Exception:  # never raise: messages that are not understood are ignored
        return None
