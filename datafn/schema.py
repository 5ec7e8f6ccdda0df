"""Load and validate a DataFn schema, and validate records against it.

A schema is JSON (a dict, a ``.json`` file or a TOML table) of the form::

    {"resources": [{"name": "todos", "version": 1, "idPrefix": "todo",
                    "fields": [{"name": "title", "type": "string", "required": true}]}],
     "relations": []}

:func:`load_schema` turns any of those into a frozen :class:`Schema`; a schema that does not
validate raises :class:`~datafn.errors.SchemaError` whose ``path`` is the JSON path of the
offending value (``$.resources[0].fields[2].type``).

:meth:`ResourceSpec.validate_record` is the one record validator of the project, used by the
client before it writes locally and by the server before it applies a mutation. It raises
:class:`~datafn.errors.ValidationFailed` with a wire error code and a path such as
``mutations[3].record.title``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import re
import tomllib
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from datafn.errors import SchemaError, ValidationFailed

log = logging.getLogger("datafn.schema")

__all__ = [
    "FORBIDDEN_KEYS",
    "IDENTIFIER_PATTERN",
    "KV_RESOURCE",
    "MAX_DEPTH",
    "MAX_ID_LENGTH",
    "FieldSpec",
    "FieldType",
    "ResourceSpec",
    "Schema",
    "canonical_json",
    "check_json_value",
    "load_schema",
    "schema_differences",
]

#: Longest record id accepted anywhere.
MAX_ID_LENGTH = 255

#: Deepest nesting of containers accepted inside one record value.
MAX_DEPTH = 32

#: Keys refused in records at any depth (and as resource or field names).
FORBIDDEN_KEYS = frozenset({"__proto__", "constructor", "prototype"})

#: Resource and field names: usable as SQL table and column names.
IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
_IDENTIFIER_RE = re.compile(IDENTIFIER_PATTERN)

#: Integers outside the signed 64-bit range cannot be stored by the SQL stores.
_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1

FieldType = Literal["string", "number", "boolean", "object", "array", "date", "json"]

_RESERVED_FIELD_NAMES = frozenset({"id"}) | FORBIDDEN_KEYS


# --------------------------------------------------------------------------- helpers


class _PathedValueError(ValueError):
    """A validator error that knows the location of the offending value below the model."""

    def __init__(self, message: str, subpath: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.subpath = subpath


def _describe(value: Any) -> str:
    """A short, safe description of a value for an error message (never a deep repr)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if value.bit_length() > 64:
            return f"an integer of {value.bit_length()} bits"
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return f"a value of type {type(value).__name__}"


def _join_path(prefix: str, loc: Sequence[str | int]) -> str:
    """Append a pydantic-style location to a JSON path prefix (``""`` or ``"$"`` for none)."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "$"


def _first_error(exc: ValidationError) -> tuple[tuple[str | int, ...], str]:
    """Location and a readable message of the first error of a pydantic ``ValidationError``."""
    errors = exc.errors(include_url=False)
    if not errors:  # pragma: no cover - pydantic always reports at least one
        return (), "invalid value"
    err = errors[0]
    loc: tuple[str | int, ...] = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, _PathedValueError):
        return loc + cause.subpath, str(cause)
    if kind == "missing":
        return loc, "required key is missing"
    if kind == "extra_forbidden":
        return loc, "unknown key"
    if isinstance(cause, ValueError):
        return loc, str(cause)
    return loc, f"{err.get('msg', 'invalid value')} (got {_describe(err.get('input'))})"


def canonical_json(obj: Any) -> bytes:
    """The canonical JSON encoding: keys sorted recursively, no insignificant whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def check_json_value(value: Any, *, path: str, max_depth: int = MAX_DEPTH) -> None:
    """Check that ``value`` is plain JSON, at most ``max_depth`` containers deep.

    ``path`` is the JSON path of ``value`` (``""`` for a body root, reported as ``"$"``).
    Refuses (``ValidationFailed``, code ``DFQL_INVALID``) non-JSON types, non-string keys,
    non-finite numbers, the keys ``__proto__``, ``constructor`` and ``prototype`` at any depth,
    and nesting deeper than ``max_depth``. Iterative, so hostile input cannot exhaust the stack.

    The walk keeps one iterator per open container and builds the path of a value only when it
    is refused: building every child's path up front cost N×K bytes for N items under a
    K-character key, so a small hostile body could ask for gigabytes.
    """
    if not isinstance(value, dict | list):
        _check_json_leaf(value, path, ())
        return
    if max_depth <= 0:
        raise ValidationFailed(
            f"value is nested deeper than {max_depth} levels",
            code="DFQL_INVALID",
            path=path or "$",
        )
    # frames[i] iterates the container at depth i; trail[i] is the key or index being visited
    frames: list[Any] = [iter(value.items()) if isinstance(value, dict) else enumerate(value)]
    in_object: list[bool] = [isinstance(value, dict)]
    trail: list[str | int] = [0]
    while frames:
        for key, item in frames[-1]:
            if in_object[-1]:
                if not isinstance(key, str):
                    raise ValidationFailed(
                        f"object keys must be strings, got {_describe(key)}",
                        code="DFQL_INVALID",
                        path=_join_path(path, trail[:-1]),
                    )
                if key in FORBIDDEN_KEYS:
                    trail[-1] = key
                    raise ValidationFailed(
                        f"the key {key!r} is not allowed",
                        code="DFQL_INVALID",
                        path=_join_path(path, trail),
                    )
            trail[-1] = key
            if item is None or isinstance(item, str | bool | int):
                continue
            if isinstance(item, dict | list):
                if len(frames) >= max_depth:
                    raise ValidationFailed(
                        f"value is nested deeper than {max_depth} levels",
                        code="DFQL_INVALID",
                        path=_join_path(path, trail),
                    )
                frames.append(iter(item.items()) if isinstance(item, dict) else enumerate(item))
                in_object.append(isinstance(item, dict))
                trail.append(0)
                break
            _check_json_leaf(item, path, trail)
        else:
            frames.pop()
            in_object.pop()
            trail.pop()


def _check_json_leaf(item: Any, path: str, trail: Sequence[str | int]) -> None:
    """Refuse a scalar that is not JSON (the path is built only then)."""
    if item is None or isinstance(item, str | bool | int):
        return
    if isinstance(item, float):
        if not math.isfinite(item):
            raise ValidationFailed(
                "numbers must be finite", code="DFQL_INVALID", path=_join_path(path, trail)
            )
        return
    raise ValidationFailed(
        f"expected a JSON value, got {_describe(item)}",
        code="DFQL_INVALID",
        path=_join_path(path, trail),
    )


def _parse_date(value: str) -> bool:
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _type_error(field: FieldSpec, value: Any) -> str | None:
    """Why ``value`` (not None) is not of the field's type, or None when it is."""
    kind = field.type
    if kind == "string":
        return None if isinstance(value, str) else f"expected a string, got {_describe(value)}"
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, got {_describe(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"expected a finite number, got {_describe(value)}"
        if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
            return f"integer out of the 64-bit range, got {_describe(value)}"
        return None
    if kind == "boolean":
        return None if isinstance(value, bool) else f"expected a boolean, got {_describe(value)}"
    if kind == "object":
        return None if isinstance(value, dict) else f"expected an object, got {_describe(value)}"
    if kind == "array":
        return None if isinstance(value, list) else f"expected an array, got {_describe(value)}"
    if kind == "date":
        if isinstance(value, str):
            if _parse_date(value):
                return None
            return f"expected an ISO-8601 date, got {_describe(value)}"
        if isinstance(value, int) and not isinstance(value, bool):
            if _INT_MIN <= value <= _INT_MAX:
                return None
            return f"epoch milliseconds out of range, got {_describe(value)}"
        return f"expected an ISO-8601 date string or epoch milliseconds, got {_describe(value)}"
    return None  # json: checked by check_json_value


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``, ``1`` equals ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _check_value(field: FieldSpec, value: Any, path: str) -> None:
    """Validate one field value; raises ``ValidationFailed`` (``DFQL_INVALID``) at ``path``."""
    if value is None:
        if field.nullable:
            return
        raise ValidationFailed("value must not be null", code="DFQL_INVALID", path=path)
    problem = _type_error(field, value)
    if problem is not None:
        raise ValidationFailed(problem, code="DFQL_INVALID", path=path)
    if field.type == "json" or isinstance(value, dict | list):
        check_json_value(value, path=path)
    if field.enum is not None and not any(_json_equal(value, e) for e in field.enum):
        allowed = ", ".join(_describe(e) for e in field.enum[:10])
        raise ValidationFailed(
            f"value must be one of {allowed}, got {_describe(value)}",
            code="DFQL_INVALID",
            path=path,
        )
    if field.type == "number":
        if field.min is not None and value < field.min:
            raise ValidationFailed(
                f"value must be >= {field.min:g}, got {_describe(value)}",
                code="DFQL_INVALID",
                path=path,
            )
        if field.max is not None and value > field.max:
            raise ValidationFailed(
                f"value must be <= {field.max:g}, got {_describe(value)}",
                code="DFQL_INVALID",
                path=path,
            )
    if isinstance(value, str | list) and field.type in ("string", "array"):
        unit = "characters" if isinstance(value, str) else "items"
        if field.min_length is not None and len(value) < field.min_length:
            raise ValidationFailed(
                f"length must be >= {field.min_length} {unit}, got {len(value)}",
                code="DFQL_INVALID",
                path=path,
            )
        if field.max_length is not None and len(value) > field.max_length:
            raise ValidationFailed(
                f"length must be <= {field.max_length} {unit}, got {len(value)}",
                code="DFQL_INVALID",
                path=path,
            )
    if field.pattern is not None and isinstance(value, str) and not re.search(field.pattern, value):
        raise ValidationFailed(
            f"value does not match the pattern {field.pattern!r}",
            code="DFQL_INVALID",
            path=path,
        )


# --------------------------------------------------------------------------- models


class _SchemaModel(BaseModel):
    model_config = ConfigDict(
        strict=True,
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
    )


class FieldSpec(_SchemaModel):
    """One field of a resource; wire keys are camelCase (``minLength``, ``maxLength``)."""

    name: str
    type: FieldType
    required: bool = False
    nullable: bool = False
    default: Any = None
    enum: list[Any] | None = Field(default=None, min_length=1)
    min: float | None = None
    max: float | None = None
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=0)
    pattern: str | None = None
    readonly: bool = False

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if value in _RESERVED_FIELD_NAMES:
            raise ValueError(f"{value!r} is a reserved name and cannot be a field name")
        if not _IDENTIFIER_RE.match(value):
            raise ValueError(f"field names must match {IDENTIFIER_PATTERN}, got {_describe(value)}")
        return value

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("min", "max")
    @classmethod
    def _check_finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {_describe(value)}")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> FieldSpec:
        if (self.min is not None or self.max is not None) and self.type != "number":
            key = "min" if self.min is not None else "max"
            raise _PathedValueError(f"{key} applies to number fields only, not {self.type}", (key,))
        if (self.min_length is not None or self.max_length is not None) and self.type not in (
            "string",
            "array",
        ):
            key = "minLength" if self.min_length is not None else "maxLength"
            raise _PathedValueError(
                f"{key} applies to string and array fields only, not {self.type}", (key,)
            )
        if self.pattern is not None and self.type != "string":
            raise _PathedValueError(
                f"pattern applies to string fields only, not {self.type}", ("pattern",)
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise _PathedValueError(f"max ({self.max:g}) is below min ({self.min:g})", ("max",))
        if (
            self.min_length is not None
            and self.max_length is not None
            and self.min_length > self.max_length
        ):
            raise _PathedValueError(
                f"maxLength ({self.max_length}) is below minLength ({self.min_length})",
                ("maxLength",),
            )
        if self.enum is not None:
            for index, item in enumerate(self.enum):
                try:
                    _check_value(self.model_copy(update={"enum": None}), item, "$")
                except ValidationFailed as exc:
                    raise _PathedValueError(
                        f"enum value does not fit the field: {exc.message}", ("enum", index)
                    ) from None
        if self.has_default:
            try:
                _check_value(self, self.default, "$")
            except ValidationFailed as exc:
                raise _PathedValueError(
                    f"default does not fit the field: {exc.message}", ("default",)
                ) from None
        return self

    @property
    def has_default(self) -> bool:
        """True when the schema gives a default (which may be ``null``)."""
        return "default" in self.model_fields_set

    def to_dict(self) -> dict[str, Any]:
        """The wire form: camelCase keys, unset options omitted."""
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        for flag in ("required", "nullable", "readonly"):
            if getattr(self, flag):
                out[flag] = True
        if self.has_default:
            out["default"] = copy.deepcopy(self.default)
        if self.enum is not None:
            out["enum"] = copy.deepcopy(self.enum)
        for attr, key in (
            ("min", "min"),
            ("max", "max"),
            ("min_length", "minLength"),
            ("max_length", "maxLength"),
            ("pattern", "pattern"),
        ):
            value = getattr(self, attr)
            if value is not None:
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                out[key] = value
        return out


class ResourceSpec(_SchemaModel):
    """One resource (a table of records) of a schema."""

    name: str = Field(pattern=IDENTIFIER_PATTERN)
    version: int = Field(default=1, ge=1, le=2**31 - 1)
    id_prefix: str | None = Field(default=None, min_length=1, max_length=64)
    is_remote_only: bool = False
    fields: list[FieldSpec] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if value in FORBIDDEN_KEYS:
            raise ValueError(f"{value!r} is a reserved name and cannot be a resource name")
        return value

    @model_validator(mode="after")
    def _check_fields(self) -> ResourceSpec:
        seen: set[str] = set()
        for index, spec in enumerate(self.fields):
            if spec.name in seen:
                raise _PathedValueError(
                    f"duplicate field name {spec.name!r}", ("fields", index, "name")
                )
            seen.add(spec.name)
        return self

    @cached_property
    def _by_name(self) -> dict[str, FieldSpec]:
        return {spec.name: spec for spec in self.fields}

    @cached_property
    def _plain_fields(self) -> dict[str, type]:
        """Fields whose only rule is their type (string or boolean, no other constraint): a
        value of exactly that Python type is valid as it is (the fast path of validate_record;
        any other value goes through the full check and its exact error)."""
        plain: dict[str, type] = {}
        for spec in self.fields:
            if spec.name in FORBIDDEN_KEYS or spec.enum is not None:
                continue
            if spec.type == "boolean":
                plain[spec.name] = bool
            elif spec.type == "string" and (
                spec.min_length is None and spec.max_length is None and spec.pattern is None
            ):
                plain[spec.name] = str
        return plain

    @property
    def field_names(self) -> list[str]:
        """The field names, in schema order (``id`` is implicit and not listed)."""
        return [spec.name for spec in self.fields]

    def field(self, name: str) -> FieldSpec | None:
        """The field called ``name``, or None."""
        return self._by_name.get(name)

    def new_id(self) -> str:
        """A fresh record id: ``"<idPrefix or name>:<uuid4>"``."""
        return f"{self.id_prefix or self.name}:{uuid.uuid4()}"

    def to_dict(self) -> dict[str, Any]:
        """The wire form: camelCase keys, unset options omitted."""
        out: dict[str, Any] = {"name": self.name, "version": self.version}
        if self.id_prefix is not None:
            out["idPrefix"] = self.id_prefix
        if self.is_remote_only:
            out["isRemoteOnly"] = True
        out["fields"] = [spec.to_dict() for spec in self.fields]
        return out

    def validate_record(
        self, record: Any, *, partial: bool = False, path: str = "$"
    ) -> dict[str, Any]:
        """Validate a record of this resource and return it normalised.

        ``partial`` is for merges: required fields may be missing and no defaults are applied.
        Otherwise missing fields with a default get (a copy of) it. ``path`` is the JSON path of
        the record itself; errors point below it (``f"{path}.{key}"``).
        """
        if not isinstance(record, dict):
            raise ValidationFailed(
                f"a record must be an object, got {_describe(record)}",
                code="DFQL_INVALID",
                path=path,
            )
        out: dict[str, Any] = {}
        plain = self._plain_fields
        for key, value in record.items():
            if type(value) is plain.get(key):
                out[key] = value
                continue
            if not isinstance(key, str):
                raise ValidationFailed(
                    f"record keys must be strings, got {_describe(key)}",
                    code="DFQL_INVALID",
                    path=path,
                )
            key_path = f"{path}.{key}"
            if key in FORBIDDEN_KEYS:
                raise ValidationFailed(
                    f"the key {key!r} is not allowed", code="DFQL_INVALID", path=key_path
                )
            if key == "id":
                if not isinstance(value, str) or not value:
                    raise ValidationFailed(
                        f"id must be a non-empty string, got {_describe(value)}",
                        code="DFQL_INVALID",
                        path=key_path,
                    )
                if len(value) > MAX_ID_LENGTH:
                    raise ValidationFailed(
                        f"id must be at most {MAX_ID_LENGTH} characters, got {len(value)}",
                        code="DFQL_INVALID",
                        path=key_path,
                    )
                out[key] = value
                continue
            spec = self.field(key)
            if spec is None:
                raise ValidationFailed(
                    f"unknown field {key!r} of resource {self.name!r}",
                    code="DFQL_UNKNOWN_FIELD",
                    path=key_path,
                )
            _check_value(spec, value, key_path)
            out[key] = value
        if not partial:
            for spec in self.fields:
                if spec.name in out:
                    continue
                if spec.has_default:
                    default = spec.default
                    # a container is copied (the caller may change it); a scalar is immutable
                    out[spec.name] = (
                        copy.deepcopy(default) if isinstance(default, dict | list) else default
                    )
                elif spec.required:
                    raise ValidationFailed(
                        f"required field {spec.name!r} is missing",
                        code="DFQL_INVALID",
                        path=f"{path}.{spec.name}",
                    )
        return out


class Schema(_SchemaModel):
    """A validated DataFn schema: resources and (opaque) relations."""

    resources: list[ResourceSpec] = Field(min_length=1)
    relations: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_resources(self) -> Schema:
        seen: set[str] = set()
        for index, resource in enumerate(self.resources):
            if resource.name in seen:
                raise _PathedValueError(
                    f"duplicate resource name {resource.name!r}", ("resources", index, "name")
                )
            seen.add(resource.name)
        return self

    @model_validator(mode="before")
    @classmethod
    def _builtin_kv(cls, data: Any) -> Any:
        """Every schema has the built-in ``kv`` resource, as the original DataFn adds it (its
        clients clone, pull and reconcile it): appended when absent, checked when present."""
        if not isinstance(data, dict) or not isinstance(data.get("resources"), list):
            return data
        resources = data["resources"]
        if not resources:
            return data  # an empty schema is refused as such
        for index, resource in enumerate(resources):
            if isinstance(resource, dict) and resource.get("name") == KV_RESOURCE:
                _check_kv(resource, index)
                return data
        return {**data, "resources": [*resources, copy.deepcopy(KV_RESOURCE_SPEC)]}

    @classmethod
    def from_dict(cls, data: Any) -> Schema:
        """Validate a wire-form schema dict; raises ``SchemaError`` with a JSON path.

        A schema written for the original DataFn server loads too: the keys that do not
        concern sync (``indices``, ``permissions``, ``capabilities``, a top-level ``version``
        …) are ignored with one warning naming them, and a field declared as ``id`` (ids are
        implicit here) must be a string.
        """
        if not isinstance(data, dict):
            raise SchemaError(f"a schema must be an object, got {_describe(data)}", path="$")
        data, ignored = _strip_original_keys(data)
        if ignored:
            log.warning(
                "schema: ignored %d key(s) of the original DataFn schema format that do not "
                "concern sync: %s",
                len(ignored),
                ", ".join(ignored[:20]) + (" …" if len(ignored) > 20 else ""),
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            loc, message = _first_error(exc)
            raise SchemaError(message, path=_join_path("$", loc)) from None

    @cached_property
    def _by_name(self) -> dict[str, ResourceSpec]:
        return {resource.name: resource for resource in self.resources}

    @property
    def resource_names(self) -> list[str]:
        """The resource names, in schema order."""
        return [resource.name for resource in self.resources]

    def has_resource(self, name: str) -> bool:
        return name in self._by_name

    def resource(self, name: str, path: str = "$") -> ResourceSpec:
        """The resource called ``name``; ``DFQL_UNKNOWN_RESOURCE`` at ``path`` if none."""
        try:
            return self._by_name[name]
        except (KeyError, TypeError):
            raise ValidationFailed(
                f"unknown resource {_describe(name)}", code="DFQL_UNKNOWN_RESOURCE", path=path
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """The wire form: camelCase keys, unset options omitted."""
        return {
            "resources": [resource.to_dict() for resource in self.resources],
            "relations": copy.deepcopy(self.relations),
        }

    @cached_property
    def hash(self) -> str:
        """``"sha256:<hex>"`` of the canonical JSON of :meth:`to_dict`."""
        return "sha256:" + hashlib.sha256(canonical_json(self.to_dict())).hexdigest()


#: The name of the built-in key-value resource.
KV_RESOURCE = "kv"

#: The built-in ``kv`` resource as the original DataFn defines it (its ``id`` field is this
#: schema's implicit id; its ``indices`` and ``permissions`` do not concern sync).
KV_RESOURCE_SPEC: dict[str, Any] = {
    "name": KV_RESOURCE,
    "version": 1,
    "idPrefix": KV_RESOURCE,
    "fields": [{"name": "value", "type": "json"}],
}

#: Keys of the original DataFn schema format that do not concern sync: accepted, ignored.
_ORIGINAL_SCHEMA_KEYS = frozenset({"version", "capabilities", "namespaced", "plugins"})
_ORIGINAL_RESOURCE_KEYS = frozenset(
    {
        "indices",
        "permissions",
        "capabilities",
        "namespaced",
        "description",
        "label",
        "search",
        "views",
        "timestamps",
        "softDelete",
        "e2ee",
    }
)
_ORIGINAL_FIELD_KEYS = frozenset(
    {"unique", "description", "label", "index", "indexed", "searchable", "encrypted", "e2ee"}
)


def _strip_original_keys(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The schema without the original format's keys that do not concern sync (and without a
    field declared as ``id``), and the paths of the keys left out."""
    ignored: list[str] = []
    out = {k: v for k, v in data.items() if k not in _ORIGINAL_SCHEMA_KEYS}
    ignored += [k for k in data if k in _ORIGINAL_SCHEMA_KEYS]
    resources = data.get("resources")
    if not isinstance(resources, list):
        return out, ignored
    kept_resources: list[Any] = []
    for r_index, resource in enumerate(resources):
        if not isinstance(resource, dict):
            kept_resources.append(resource)
            continue
        where = f"resources[{r_index}]"
        kept = {k: v for k, v in resource.items() if k not in _ORIGINAL_RESOURCE_KEYS}
        ignored += [f"{where}.{k}" for k in resource if k in _ORIGINAL_RESOURCE_KEYS]
        fields = resource.get("fields")
        if isinstance(fields, list):
            kept_fields: list[Any] = []
            for f_index, spec in enumerate(fields):
                if not isinstance(spec, dict):
                    kept_fields.append(spec)
                    continue
                if spec.get("name") == "id":
                    if spec.get("type", "string") != "string":
                        raise SchemaError(
                            "a field declared as 'id' must be a string (ids are strings)",
                            path=f"$.{where}.fields[{f_index}].type",
                        )
                    ignored.append(f"{where}.fields[{f_index}] (id is implicit)")
                    continue
                kept_fields.append({k: v for k, v in spec.items() if k not in _ORIGINAL_FIELD_KEYS})
                ignored += [
                    f"{where}.fields[{f_index}].{k}" for k in spec if k in _ORIGINAL_FIELD_KEYS
                ]
            kept["fields"] = kept_fields
        kept_resources.append(kept)
    out["resources"] = kept_resources
    return out, ignored


def _check_kv(resource: dict[str, Any], index: int) -> None:
    """A schema's own ``kv`` must be compatible with the built-in one."""
    if resource.get("version", 1) != 1:
        raise _PathedValueError(
            "the built-in kv resource has version 1", ("resources", index, "version")
        )
    fields = {f.get("name"): f for f in resource.get("fields", []) if isinstance(f, dict)}
    value = fields.get("value")
    if value is None or value.get("type") != "json" or value.get("required", False):
        raise _PathedValueError(
            "the built-in kv resource needs an optional json field 'value'",
            ("resources", index, "fields"),
        )


def schema_differences(client: Schema, server: Schema) -> list[str]:
    """What keeps a client with schema ``client`` from syncing safely with a server that has
    schema ``server``, one sentence each; empty when they are compatible.

    Compatible means: every record the client may write is accepted by the server, and every
    record the server holds is one the client can keep. Additions on the server are compatible
    when they are optional (not required, or with a default): the client keeps such fields as
    they come and never writes them. Constraints other than type and presence (enum, min/max,
    lengths, pattern) are the server's to enforce and are not compared.
    """
    problems: list[str] = []
    for mine in client.resources:
        if mine.is_remote_only:
            continue
        if not server.has_resource(mine.name):
            problems.append(f"the server has no resource {mine.name!r}")
            continue
        theirs = server.resource(mine.name)
        if theirs.is_remote_only:
            problems.append(f"resource {mine.name!r} is remote-only on the server")
            continue
        for field in mine.fields:
            other = theirs.field(field.name)
            where = f"{mine.name}.{field.name}"
            if other is None:
                problems.append(f"the server has no field {where}")
            elif other.type != field.type:
                problems.append(f"{where} is a {other.type} on the server and a {field.type} here")
            elif field.required and not other.required and not other.has_default:
                problems.append(f"{where} is required here but optional on the server")
        for other in theirs.fields:
            if mine.field(other.name) is None and other.required and not other.has_default:
                problems.append(
                    f"the server requires {mine.name}.{other.name}, which this schema lacks"
                )
    return problems


# --------------------------------------------------------------------------- loading


def _read_file(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise SchemaError(
            f"unsupported schema file {path.name!r}: expected a .json or .toml file", path="$"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SchemaError(
            f"cannot read schema file {str(path)!r}: {exc.strerror or exc}", path="$"
        ) from None
    if suffix == ".json":
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise SchemaError(
                f"schema file {path.name!r} is not valid JSON: {exc}", path="$"
            ) from None
    try:
        data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SchemaError(f"schema file {path.name!r} is not valid TOML: {exc}", path="$") from None
    nested = data.get("tool", {})
    if isinstance(nested, dict) and isinstance(nested.get("datafn"), dict):
        table = nested["datafn"].get("schema")
        if isinstance(table, dict):
            return table
    if "resources" not in data:
        raise SchemaError(
            f"schema file {path.name!r} holds no schema (neither top-level 'resources' "
            "nor a [tool.datafn.schema] table)",
            path="$",
        )
    return data


def load_schema(
    source: Schema | Mapping[str, Any] | str | Path | Any, *, base_dir: Path | None = None
) -> Schema:
    """Load a schema from a dict, a ``Schema``, or a ``.json`` / ``.toml`` file path.

    A TOML file may hold the schema at top level or under ``[tool.datafn.schema]``.
    Pydantic / SQLModel classes, lists of sources and import paths
    (``"myapp.models:Todo,Note"``) are loaded by :func:`datafn.models.load_schema_and_models`
    (an import path with ``base_dir``, the project's folder, on ``sys.path``).
    Raises :class:`~datafn.errors.SchemaError` with the JSON path of the first problem.
    """
    if isinstance(source, Schema):
        return source
    from datafn.models import is_import_path, load_schema_and_models

    if isinstance(source, str | Path) and not is_import_path(source):
        return Schema.from_dict(_read_file(Path(source)))
    if isinstance(source, Mapping):
        return Schema.from_dict(dict(source))
    if isinstance(source, str | type | list | tuple):
        return load_schema_and_models(source, base_dir=base_dir)[0]
    raise SchemaError(
        f"expected a schema object (a dict) or a file path, got {_describe(source)}", path="$"
    )
