"""Pydantic and SQLModel classes as DataFn resources.

::

    class Todo(SQLModel, table=True):
        id: str | None = Field(default=None, primary_key=True)
        title: str = Field(max_length=200)
        done: bool = False

    async with datafn.Client(schema=[Todo], store="sqlite:///app.db") as client:
        todo = await client.table(Todo).insert(Todo(title="write docs"))

:func:`resource_from_model` maps one class to a resource of the DataFn schema format
(:mod:`datafn.schema`), field by field (the table is in ``docs/models.md``);
:func:`load_schema_and_models` loads any schema source: a class, a list mixing classes,
resource dicts, schema dicts and files, or an import path ``"myapp.models:Todo,Note"``. A field
that cannot be mapped raises :class:`~datafn.errors.SchemaError` naming the class and the field
(``Todo.tags: list[set[int]] cannot be mapped: …``).

Only pydantic is needed here; SQLModel classes are pydantic models and need nothing more.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import importlib
import ipaddress
import re
import sys
import types
import typing
import uuid
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, TypedDict, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from datafn.errors import SchemaError
from datafn.schema import FieldSpec, Schema, _first_error, load_schema

__all__ = [
    "ModelT",
    "ResourceOptions",
    "is_import_path",
    "is_model_class",
    "load_models",
    "load_schema_and_models",
    "record_from_model",
    "record_to_model",
    "resource_from_model",
    "resource_name",
]

ModelT = TypeVar("ModelT", bound=BaseModel)

#: ``module.path:Name`` or ``module.path:Name1,Name2`` (spaces allowed after commas).
_IMPORT_PATH_RE = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*:"
    r"\s*([A-Za-z_][A-Za-z0-9_]*(?:\s*,\s*[A-Za-z_][A-Za-z0-9_]*)*)\s*$"
)

#: Most classes one import path may name.
_MAX_IMPORTED = 256


class ResourceOptions(TypedDict, total=False):
    """The ``__datafn__`` class attribute: resource options a class cannot express itself.

    ::

        class Todo(BaseModel):
            __datafn__: ClassVar[ResourceOptions] = {"name": "todos", "id_prefix": "todo"}
    """

    #: the resource name (default: SQLModel's ``__tablename__``, else the class name lowercased)
    name: str
    #: ids generated for new records are ``"<id_prefix>:<uuid4>"`` (default: the name)
    id_prefix: str
    #: the resource version (default 1)
    version: int
    #: served by the server but not kept in the local store
    is_remote_only: bool


_OPTION_KEYS = {
    "name": "name",
    "id_prefix": "idPrefix",
    "version": "version",
    "is_remote_only": "isRemoteOnly",
}


# --------------------------------------------------------------------------- classes


def is_model_class(value: Any) -> bool:
    """Whether ``value`` is a pydantic model class (SQLModel classes included)."""
    return isinstance(value, type) and issubclass(value, BaseModel) and value is not BaseModel


def _options(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.__dict__.get("__datafn__")
    if raw is None:
        for base in model.__mro__[1:]:
            if "__datafn__" in base.__dict__:
                raw = base.__dict__["__datafn__"]
                break
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SchemaError(
            f"__datafn__ must be a dict of resource options, got {type(raw).__name__}",
            path=model.__name__,
        )
    unknown = sorted(str(key) for key in raw if key not in _OPTION_KEYS)
    if unknown:
        raise SchemaError(
            f"unknown __datafn__ option(s) {', '.join(unknown)}; "
            f"options: {', '.join(_OPTION_KEYS)}",
            path=model.__name__,
        )
    return dict(raw)


def resource_name(model: type[BaseModel]) -> str:
    """The resource a class maps to: ``__datafn__["name"]``, else SQLModel's
    ``__tablename__``, else the class name lowercased."""
    name = _options(model).get("name")
    tablename = getattr(model, "__tablename__", None)
    if name is None:
        name = tablename if isinstance(tablename, str) else model.__name__.lower()
    elif getattr(model, "__table__", None) is not None and name != tablename:
        # the client's SQLite store keeps a resource in the table named like it, which is
        # what select(Model) reads: the two names must agree
        raise SchemaError(
            f"__datafn__ name {name!r} differs from __tablename__ {tablename!r}; "
            "a table class keeps its records in the table named like the resource",
            path=f"{model.__name__}.__datafn__.name",
        )
    if not isinstance(name, str):
        raise SchemaError(
            f"the resource name must be a string, got {type(name).__name__}",
            path=f"{model.__name__}.__datafn__.name",
        )
    return name


# --------------------------------------------------------------------------- types


@dataclasses.dataclass
class _Mapped:
    type: str
    nullable: bool = False
    enum: list[Any] | None = None
    #: the Python type the number came from, for exclusive bounds (``int`` only)
    integer: bool = False


class _Unmappable(Exception):
    """A type that has no DataFn form; the message says why (and what to use)."""


def _type_name(tp: Any) -> str:
    """How a type is written in Python source (``list[set[int]]``, ``str | None``)."""
    if tp is type(None) or tp is None:
        return "None"
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(tp))
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in typing.get_args(tp))}]"
    if origin is not None:
        args = typing.get_args(tp)
        base = getattr(origin, "__name__", str(origin))
        if args:
            inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
            return f"{base}[{inner}]"
        return str(base)
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _literal_type(values: Sequence[Any]) -> _Mapped:
    present = [v for v in values if v is not None]
    nullable = len(present) != len(values)
    if not present:
        raise _Unmappable("a Literal of only None has no DataFn type")
    for value in present:
        if not isinstance(value, str | int | float | bool):
            raise _Unmappable(f"the literal {value!r} has no JSON form")
    if all(isinstance(v, bool) for v in present):
        kind = "boolean"
    elif all(isinstance(v, str) for v in present):
        kind = "string"
    elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        kind = "number"
    else:
        kind = "json"
    return _Mapped(kind, nullable=nullable, enum=list(present))


_REFUSED: dict[type, str] = {
    set: "JSON has no sets; use list[...] (uniqueness is not enforced by DataFn)",
    frozenset: "JSON has no sets; use list[...] or tuple[...]",
    bytes: "JSON has no bytes; use str (e.g. base64 text)",
    bytearray: "JSON has no bytes; use str (e.g. base64 text)",
    decimal.Decimal: "DataFn numbers are floats; use float, or str for an exact decimal",
    complex: "JSON has no complex numbers",
}

_STRING_TYPES: tuple[type, ...] = (
    str,
    uuid.UUID,
    dt.time,
    dt.timedelta,
    PurePath,
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
)


def _map_type(tp: Any, seen: frozenset[type] = frozenset()) -> _Mapped:
    """The DataFn type of a Python annotation; raises ``_Unmappable``."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _map_type(typing.get_args(tp)[0], seen)
    if tp is Any or tp is object:
        return _Mapped("json", nullable=True)
    if tp is None or tp is type(None):
        raise _Unmappable("None alone has no DataFn type")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        present = [a for a in args if a is not type(None)]
        nullable = len(present) != len(args)
        mapped = [_map_type(a, seen) for a in present]
        kinds = {m.type for m in mapped}
        nullable = nullable or any(m.nullable for m in mapped)
        if len(kinds) == 1:
            enums = [m.enum for m in mapped]
            joined = None if any(e is None for e in enums) else [v for e in enums for v in e or []]
            return _Mapped(
                kinds.pop(),
                nullable=nullable,
                enum=joined,
                integer=all(m.integer for m in mapped),
            )
        return _Mapped("json", nullable=nullable)
    if origin is typing.Literal:
        return _literal_type(typing.get_args(tp))
    if getattr(tp, "__name__", None) == "JsonValue" or str(tp).endswith("JsonValue"):
        return _Mapped("json", nullable=True)
    alias_type = getattr(typing, "TypeAliasType", None)  # Python 3.12+
    if alias_type is not None and isinstance(tp, alias_type):
        return _map_type(tp.__value__, seen)
    if isinstance(tp, typing.TypeVar):
        raise _Unmappable("a type variable has no DataFn type; use a concrete type")
    container = origin if origin is not None else tp
    if isinstance(container, type):
        for refused, why in _REFUSED.items():
            if issubclass(container, refused):
                raise _Unmappable(why)
        if issubclass(container, enum.Enum):
            return _literal_type([member.value for member in container])
        if container is bool:
            return _Mapped("boolean")
        if issubclass(container, int) and container is not bool:
            return _Mapped("number", integer=True)
        if issubclass(container, float):
            return _Mapped("number")
        if issubclass(container, dt.date):  # datetime is a date
            return _Mapped("date")
        if issubclass(container, _STRING_TYPES):
            return _Mapped("string")
        if issubclass(container, Mapping) or container is dict:
            args = typing.get_args(tp)
            if args:
                key = _map_type(args[0], seen)
                if key.type != "string":
                    raise _Unmappable(f"JSON object keys are strings, not {_type_name(args[0])}")
                _map_type(args[1], seen)
            return _Mapped("object")
        if issubclass(container, list | tuple) or container in (Sequence, typing.Sequence):
            for arg in typing.get_args(tp):
                if arg is not Ellipsis:
                    _map_type(arg, seen)
            return _Mapped("array")
        if issubclass(container, BaseModel) or dataclasses.is_dataclass(container):
            if container not in seen:
                for name, hint in typing.get_type_hints(container).items():
                    if name.startswith("_") or typing.get_origin(hint) is typing.ClassVar:
                        continue
                    _map_type(hint, seen | {container})
            return _Mapped("object")
        if typing.is_typeddict(container):
            for hint in typing.get_type_hints(container).values():
                _map_type(hint, seen | {container})
            return _Mapped("object")
    return _from_json_schema(tp)


def _from_json_schema(tp: Any) -> _Mapped:
    """Any other type pydantic can serialise, by the JSON type of its JSON schema
    (``HttpUrl``, ``EmailStr``, ``SecretStr`` …)."""
    try:
        schema = TypeAdapter(tp).json_schema(mode="serialization")
    except Exception:
        raise _Unmappable(f"pydantic cannot describe {_type_name(tp)} as JSON") from None
    kind = {
        "string": "string",
        "integer": "number",
        "number": "number",
        "boolean": "boolean",
        "object": "object",
        "array": "array",
    }.get(str(schema.get("type")))
    if kind is None or schema.get("uniqueItems"):
        raise _Unmappable(f"{_type_name(tp)} has no DataFn type")
    return _Mapped(kind, integer=schema.get("type") == "integer")


def _annotated_metadata(tp: Any) -> list[Any]:
    """Constraints written as ``Annotated[...]`` on the field's type (or on the type inside
    ``X | None``)."""
    out: list[Any] = []
    if typing.get_origin(tp) is typing.Annotated:
        out += list(tp.__metadata__)
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        present = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(present) == 1 and typing.get_origin(present[0]) is typing.Annotated:
            out += list(present[0].__metadata__)
    flat: list[Any] = []
    for item in out:
        if isinstance(item, FieldInfo):
            flat += item.metadata
        else:
            flat.append(item)
    return flat


def _constraints(info: FieldInfo, mapped: _Mapped) -> dict[str, Any]:
    """The field's constraints as DataFn keys; raises ``_Unmappable`` for the others."""
    metadata = list(info.metadata) + _annotated_metadata(info.annotation)
    out: dict[str, Any] = {}
    regex = getattr(info, "_attributes_set", {}).get("regex")  # SQLModel's Field(regex=…)
    if isinstance(regex, str):
        out["pattern"] = regex
    for meta in metadata:
        grouped = getattr(meta, "__is_annotated_types_grouped_metadata__", False)
        if grouped is True and not isinstance(meta, FieldInfo):  # StringConstraints, Interval
            metadata += [m for m in meta if m is not meta]
            continue
        for attr in ("ge", "le", "gt", "lt", "min_length", "max_length", "pattern", "multiple_of"):
            value = getattr(meta, attr, None)
            if value is None or isinstance(meta, FieldInfo):
                continue
            _constraint(out, attr, value, mapped)
    return out


def _constraint(out: dict[str, Any], attr: str, value: Any, mapped: _Mapped) -> None:
    if attr == "multiple_of":
        raise _Unmappable(f"multiple_of={value!r} has no DataFn form")
    if attr in ("ge", "le", "gt", "lt"):
        if mapped.type != "number":
            raise _Unmappable(f"{attr}={value!r} applies to numbers only in DataFn")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Unmappable(f"{attr}={value!r} is not a number")
        if attr in ("gt", "lt"):
            if not (mapped.integer and isinstance(value, int)):
                raise _Unmappable(
                    f"{attr}={value!r} is exclusive and DataFn bounds are inclusive; "
                    f"use {'ge' if attr == 'gt' else 'le'} (exclusive bounds map on int fields)"
                )
            value = value + 1 if attr == "gt" else value - 1
        key = "min" if attr in ("ge", "gt") else "max"
        out[key] = value if key not in out else (max if key == "min" else min)(out[key], value)
        return
    if attr in ("min_length", "max_length"):
        if mapped.type not in ("string", "array"):
            raise _Unmappable(f"{attr}={value!r} applies to strings and lists only in DataFn")
        out["minLength" if attr == "min_length" else "maxLength"] = int(value)
        return
    if mapped.type != "string":
        raise _Unmappable(f"pattern={value!r} applies to strings only in DataFn")
    out["pattern"] = value if isinstance(value, str) else getattr(value, "pattern", str(value))


def _default(info: FieldInfo, mapped: _Mapped) -> tuple[bool, Any]:
    """Whether the field has a schema default, and its JSON form."""
    if info.default is PydanticUndefined or info.default_factory is not None:
        return False, None
    if info.default is None and not mapped.nullable:
        return False, None
    try:
        annotation = info.annotation if info.annotation is not None else Any
        value = TypeAdapter(annotation).dump_python(info.default, mode="json")
    except Exception as exc:
        raise _Unmappable(f"the default {info.default!r} has no JSON form: {exc}") from None
    return True, value


# --------------------------------------------------------------------------- resources


def resource_from_model(model: type[BaseModel]) -> dict[str, Any]:
    """The resource (wire form, as in a schema's ``resources`` list) that ``model`` maps to.

    Raises :class:`~datafn.errors.SchemaError` whose path is ``Class.field``.
    """
    if not is_model_class(model):
        raise SchemaError(
            f"expected a pydantic or SQLModel class, got {_type_name(model)}", path="$"
        )
    cls = model.__name__
    options = _options(model)
    resource: dict[str, Any] = {"name": resource_name(model)}
    for key, wire in _OPTION_KEYS.items():
        if key != "name" and key in options:
            resource[wire] = options[key]
    id_info = model.model_fields.get("id")
    if id_info is None:
        raise SchemaError(
            "has no field 'id': DataFn records are identified by a string id "
            "(declare `id: str | None = None`)",
            path=cls,
        )
    try:
        id_type = _map_type(id_info.annotation)
    except _Unmappable:
        id_type = _Mapped("json")
    if id_type.type != "string" or id_type.enum is not None:
        raise SchemaError(
            f"{_type_name(id_info.annotation)} cannot be the id: DataFn ids are strings "
            "(declare `id: str | None = None`)",
            path=f"{cls}.id",
        )
    fields: list[dict[str, Any]] = []
    for name, info in model.model_fields.items():
        if name == "id":
            continue
        where = f"{cls}.{name}"
        if info.alias is not None and info.alias != name:
            raise SchemaError(
                f"the alias {info.alias!r} cannot be mapped: DataFn field names are the "
                "Python field names (drop the alias)",
                path=where,
            )
        try:
            mapped = _map_type(info.annotation)
            spec: dict[str, Any] = {"name": name, "type": mapped.type}
            if info.is_required():
                spec["required"] = True
            if mapped.nullable:
                spec["nullable"] = True
            has_default, default = _default(info, mapped)
            if has_default:
                spec["default"] = default
            if mapped.enum is not None:
                spec["enum"] = mapped.enum
            spec.update(_constraints(info, mapped))
        except _Unmappable as exc:
            raise SchemaError(
                f"{_type_name(info.annotation)} cannot be mapped: {exc}", path=where
            ) from None
        try:
            FieldSpec.model_validate(spec)
        except ValidationError as exc:
            loc, message = _first_error(exc)
            detail = f" ({'.'.join(str(p) for p in loc)})" if loc else ""
            raise SchemaError(
                f"{_type_name(info.annotation)} cannot be mapped{detail}: {message}", path=where
            ) from None
        fields.append(spec)
    resource["fields"] = fields
    return resource


# --------------------------------------------------------------------------- import paths


def is_import_path(value: Any) -> bool:
    """Whether ``value`` is a string of the form ``module.path:Name[,Name…]`` (and not a file
    path: it has no slash and does not end in ``.json`` / ``.toml``)."""
    if not isinstance(value, str) or "/" in value or "\\" in value:
        return False
    return _IMPORT_PATH_RE.match(value) is not None


def load_models(spec: str, base_dir: Path | None = None) -> list[type[BaseModel]]:
    """Import the classes an import path names (``"myapp.models:Todo,Note"``).

    ``base_dir`` (the project's folder) is put first on ``sys.path`` (and stays there) so the
    project's own packages import. Every failure is one :class:`~datafn.errors.SchemaError`
    line whose path is the import path (``myapp.models:Todo: module 'myapp' not found …``):
    module not found, import failed, attribute missing, not a model class.
    """
    match = _IMPORT_PATH_RE.match(spec)
    if match is None:
        raise SchemaError(
            f"{spec!r} is not an import path of the form 'package.module:Class[,Class…]'",
            path="$",
        )
    module_name = match.group(1)
    names = [name.strip() for name in match.group(2).split(",")]
    if len(names) > _MAX_IMPORTED:
        raise SchemaError(f"{spec!r} names more than {_MAX_IMPORTED} classes", path="$")
    if base_dir is not None:
        folder = str(Path(base_dir).resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)
    where = f" (searched {base_dir} and sys.path)" if base_dir is not None else ""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise SchemaError(f"module {missing!r} not found{where}", path=spec) from None
        raise SchemaError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}", path=spec
        ) from None
    except Exception as exc:
        raise SchemaError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}", path=spec
        ) from None
    models: list[type[BaseModel]] = []
    for name in names:
        value = getattr(module, name, None)
        if value is None:
            raise SchemaError(f"module {module_name!r} has no attribute {name!r}", path=spec)
        if not is_model_class(value):
            raise SchemaError(
                f"{module_name}.{name} is not a pydantic or SQLModel class "
                f"(got {type(value).__name__})",
                path=spec,
            )
        models.append(value)
    return models


# --------------------------------------------------------------------------- schema sources


def load_schema_and_models(
    source: Any, *, base_dir: Path | None = None
) -> tuple[Schema, dict[str, type[BaseModel]]]:
    """Load a schema from any source and return it with the classes it came from, by resource.

    ``source`` is a :class:`~datafn.schema.Schema`, a schema dict, a ``.json``/``.toml``
    path, an import path (``"myapp.models:Todo,Note"``), a model class, or a list mixing
    those with resource dicts (``{"name": "notes", "fields": [...]}``); the resources are
    joined in order (a repeated name is an error) and the relations of schema dicts are kept.
    Import paths are imported with ``base_dir`` (the project's folder) first on ``sys.path``;
    relative file paths are relative to the working directory (the configuration has already
    made those of ``[tool.datafn]`` absolute).
    """
    models: dict[str, type[BaseModel]] = {}
    if isinstance(source, Schema | Mapping) or (
        isinstance(source, str | Path) and not is_import_path(source)
    ):
        return load_schema(source), models
    items: Sequence[Any]
    if isinstance(source, str | type):
        items = [source]
    elif isinstance(source, Sequence):
        items = source
    else:
        return load_schema(source), models
    resources: list[Any] = []
    relations: list[Any] = []
    for index, item in enumerate(items):
        if is_model_class(item):
            resource = resource_from_model(item)
            resources.append(resource)
            models[resource["name"]] = item
        elif isinstance(item, str) and is_import_path(item):
            for model in load_models(item, base_dir):
                resource = resource_from_model(model)
                resources.append(resource)
                models[resource["name"]] = model
        elif isinstance(item, Mapping) and "resources" not in item and "fields" in item:
            resources.append(dict(item))
        elif isinstance(item, Schema | Mapping | str | Path):
            part = load_schema(item).to_dict()
            resources += [r for r in part["resources"] if r["name"] != "kv"]
            relations += part["relations"]
        else:
            raise SchemaError(
                "expected a model class, a resource or schema dict, a schema file or an "
                f"import path, got {type(item).__name__}",
                path=f"$[{index}]",
            )
    if not resources:
        raise SchemaError(
            "expected a schema object (a dict), a file or import path, or a non-empty list of "
            "model classes and resources; got a list of no resources",
            path="$",
        )
    return load_schema({"resources": resources, "relations": relations}), models


# --------------------------------------------------------------------------- records


def record_from_model(
    instance: BaseModel | Mapping[str, Any], *, only_set: bool = False
) -> dict[str, Any]:
    """A model instance as a DataFn record (JSON values; a ``None`` id is left out so one is
    generated). ``only_set``: only the fields given when the instance was made (for merges).
    A mapping is returned as a dict, unchanged."""
    if not isinstance(instance, BaseModel):
        return dict(instance)
    record: dict[str, Any] = instance.model_dump(mode="json", exclude_unset=only_set)
    if record.get("id") is None:
        record.pop("id", None)
    return record


def record_to_model(model: type[ModelT], record: Mapping[str, Any]) -> ModelT:
    """A stored record as an instance of ``model`` (fields the model lacks are left out).

    A ``date``/``datetime`` field is given what the DataFn ``date`` type accepts, as other
    clients may write it: epoch milliseconds (UTC) and any ISO 8601 form become the field's
    type (a date-time read into a ``date`` field is its date, in UTC when it has an offset)."""
    fields = model.model_fields
    kinds = _date_fields(model)
    values = {k: v for k, v in record.items() if k in fields}
    for name, kind in kinds.items():
        value = values.get(name)
        if value is not None:
            values[name] = _date_value(value, kind)
    return model.model_validate(values)


_DATE_FIELDS: weakref.WeakKeyDictionary[type[BaseModel], dict[str, type[dt.date]]] = (
    weakref.WeakKeyDictionary()
)


def _date_fields(model: type[BaseModel]) -> dict[str, type[dt.date]]:
    """The fields of ``model`` typed ``date`` or ``datetime`` (or ``None`` with one of them):
    their names and that type."""
    found = _DATE_FIELDS.get(model)
    if found is None:
        found = {}
        for name, info in model.model_fields.items():
            tp = info.annotation
            if typing.get_origin(tp) in (typing.Union, types.UnionType):
                present = [a for a in typing.get_args(tp) if a is not type(None)]
                tp = present[0] if len(present) == 1 else None
            while typing.get_origin(tp) is typing.Annotated:
                tp = typing.get_args(tp)[0]
            if isinstance(tp, type) and issubclass(tp, dt.date):
                found[name] = dt.datetime if issubclass(tp, dt.datetime) else dt.date
        _DATE_FIELDS[model] = found
    return found


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _date_value(value: Any, kind: type[dt.date]) -> Any:
    """A DataFn ``date`` value as a ``kind`` (``date`` or ``datetime``); any other value, or
    one no ``kind`` can hold, unchanged (the model's validation then reports it)."""
    moment: dt.datetime | dt.date
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            moment = _EPOCH + dt.timedelta(milliseconds=value)
        except OverflowError:
            return value
    elif isinstance(value, str):
        text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            return value
    else:
        return value
    if kind is dt.datetime:
        return moment
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return moment.date()
