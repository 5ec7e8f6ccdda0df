"""Pydantic and SQLModel classes as the schema: the mapping, its errors, typed tables through a
real server, import paths, and the SQLite file read with a plain SQLModel session."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import enum
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import click
import pytest
from pydantic import BaseModel, StringConstraints, create_model
from pydantic import Field as PydanticField
from sqlalchemy import JSON
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, create_engine, select
from typing_extensions import TypedDict

from datafn import BlockingClient, Client, ModelTable, SchemaError, ValidationFailed
from datafn.builtins.server_commands import _schema_option
from datafn.client import PushReport
from datafn.config import load_config
from datafn.events import (
    EVENT_NAMES,
    EVENT_TYPES,
    MutationAppliedEvent,
    RecordsChangedEvent,
    SyncAppliedEvent,
)
from datafn.models import (
    ResourceOptions,
    is_import_path,
    load_models,
    load_schema_and_models,
    resource_from_model,
)
from datafn.runtime import Runtime
from datafn.schema import load_schema
from datafn.server import create_app
from tests.client.conftest import hosted
from tests.client.real_server import Server


class _Base(SQLModel, registry=registry()):
    """Tables of these tests live in a metadata of their own."""


class Todo(_Base, table=True):
    __tablename__ = "todos"
    __datafn__: ClassVar[ResourceOptions] = {"id_prefix": "todo"}

    id: str | None = Field(default=None, primary_key=True)
    title: str = Field(max_length=200)
    done: bool = False
    priority: int = Field(default=1, ge=1, le=5)
    due: dt.datetime | None = None
    tags: list[str] = Field(default_factory=list, sa_type=JSON)


class Note(BaseModel):
    __datafn__: ClassVar[ResourceOptions] = {"name": "notes"}

    id: str | None = None
    body: str = ""


class Color(enum.StrEnum):
    red = "red"
    green = "green"


class Level(enum.IntEnum):
    low = 1
    high = 2


class Point(BaseModel):
    x: float
    y: float


class Extra(TypedDict):
    source: str


class Everything(BaseModel):
    id: str
    text: str
    short: str | None = PydanticField(default=None, min_length=1, max_length=8)
    code: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "ABC"
    count: int = PydanticField(default=0, gt=-1, lt=100)
    ratio: float = PydanticField(ge=0.0, le=1.0)
    flag: bool = True
    when: dt.datetime
    day: dt.date | None = None
    at: dt.time | None = None
    ref: uuid.UUID | None = None
    size: Literal["s", "m", "l"] = "m"
    stars: Literal[1, 2, 3] = 1
    color: Color = Color.red
    level: Level | None = None
    tags: list[str] = PydanticField(default_factory=list, max_length=10)
    pair: tuple[int, ...] = ()
    counts: dict[str, int] = {}
    point: Point | None = None
    extra: Extra | None = None
    anything: Any = None
    either: int | str = 0
    either_or_none: int | str | None = None


def test_every_supported_field_type_maps() -> None:
    assert resource_from_model(Everything) == {
        "name": "everything",
        "fields": [
            {"name": "text", "type": "string", "required": True},
            {
                "name": "short",
                "type": "string",
                "nullable": True,
                "default": None,
                "minLength": 1,
                "maxLength": 8,
            },
            {"name": "code", "type": "string", "default": "ABC", "pattern": "^[A-Z]{3}$"},
            {"name": "count", "type": "number", "default": 0, "min": 0, "max": 99},
            {"name": "ratio", "type": "number", "required": True, "min": 0.0, "max": 1.0},
            {"name": "flag", "type": "boolean", "default": True},
            {"name": "when", "type": "date", "required": True},
            {"name": "day", "type": "date", "nullable": True, "default": None},
            {"name": "at", "type": "string", "nullable": True, "default": None},
            {"name": "ref", "type": "string", "nullable": True, "default": None},
            {"name": "size", "type": "string", "default": "m", "enum": ["s", "m", "l"]},
            {"name": "stars", "type": "number", "default": 1, "enum": [1, 2, 3]},
            {"name": "color", "type": "string", "default": "red", "enum": ["red", "green"]},
            {"name": "level", "type": "number", "nullable": True, "default": None, "enum": [1, 2]},
            {"name": "tags", "type": "array", "maxLength": 10},
            {"name": "pair", "type": "array", "default": []},
            {"name": "counts", "type": "object", "default": {}},
            {"name": "point", "type": "object", "nullable": True, "default": None},
            {"name": "extra", "type": "object", "nullable": True, "default": None},
            {"name": "anything", "type": "json", "nullable": True, "default": None},
            {"name": "either", "type": "json", "default": 0},
            {"name": "either_or_none", "type": "json", "nullable": True, "default": None},
        ],
    }
    # and the kernel accepts it as it is
    spec = load_schema([Everything]).resource("everything")
    assert spec.field("count").max == 99  # type: ignore[union-attr]
    with pytest.raises(ValidationFailed, match="null") as info:  # a union without None
        spec.validate_record({"id": "e1", "text": "t", "ratio": 0.5, "when": 0, "either": None})
    assert info.value.path == "$.either"


def test_a_sqlmodel_table_class_maps_with_its_table_name_and_options() -> None:
    assert resource_from_model(Todo) == {
        "name": "todos",
        "idPrefix": "todo",
        "fields": [
            {"name": "title", "type": "string", "required": True, "maxLength": 200},
            {"name": "done", "type": "boolean", "default": False},
            {"name": "priority", "type": "number", "default": 1, "min": 1, "max": 5},
            {"name": "due", "type": "date", "nullable": True, "default": None},
            {"name": "tags", "type": "array"},
        ],
    }

    class Tagged(_Base, table=True):
        id: str = Field(primary_key=True)
        code: str = Field(regex="^[a-z]+$")

    assert resource_from_model(Tagged)["name"] == "tagged"  # SQLModel's default table name
    assert resource_from_model(Tagged)["fields"][0]["pattern"] == "^[a-z]+$"


def test_resource_options() -> None:
    class Item(BaseModel):
        __datafn__: ClassVar[ResourceOptions] = {
            "name": "items",
            "id_prefix": "it",
            "version": 3,
            "is_remote_only": True,
        }
        id: str

    assert resource_from_model(Item) == {
        "name": "items",
        "idPrefix": "it",
        "version": 3,
        "isRemoteOnly": True,
        "fields": [],
    }

    class Odd(BaseModel):
        __datafn__: ClassVar[dict[str, Any]] = {"prefix": "x"}
        id: str

    with pytest.raises(SchemaError, match="unknown __datafn__ option"):
        resource_from_model(Odd)

    class Renamed(_Base, table=True):
        __tablename__ = "renamed"
        __datafn__: ClassVar[ResourceOptions] = {"name": "other"}
        id: str = Field(primary_key=True)

    with pytest.raises(SchemaError, match="differs from __tablename__"):
        resource_from_model(Renamed)


class _Opaque:
    pass


@pytest.mark.parametrize(
    ("annotation", "default", "message"),
    [
        (list[set[int]], ..., "x: list[set[int]] cannot be mapped: JSON has no sets"),
        (set[str], ..., "x: set[str] cannot be mapped: JSON has no sets"),
        (frozenset[str], ..., "x: frozenset[str] cannot be mapped"),
        (bytes, ..., "x: bytes cannot be mapped: JSON has no bytes"),
        (decimal.Decimal, ..., "x: Decimal cannot be mapped: DataFn numbers are floats"),
        (dict[int, str], ..., "x: dict[int, str] cannot be mapped: JSON object keys"),
        (list[dict[str, bytes]], ..., "x: list[dict[str, bytes]] cannot be mapped"),
        (float, PydanticField(gt=0), "x: float cannot be mapped: gt=0 is exclusive"),
        (int, PydanticField(multiple_of=2), "x: int cannot be mapped: multiple_of=2"),
        (int, PydanticField(max_length=3), "max_length=3 applies to strings and lists"),
        (str, PydanticField(ge=3), "ge=3 applies to numbers only"),
        (str, PydanticField(alias="X"), "the alias 'X' cannot be mapped"),
        (_Opaque, ..., "x: _Opaque cannot be mapped"),
        (Literal["a"], PydanticField(default="b"), "default does not fit the field"),
    ],
)
def test_what_cannot_be_mapped_is_named(annotation: Any, default: Any, message: str) -> None:
    model = create_model(
        "Bad",
        __config__={"arbitrary_types_allowed": True},
        id=(str, ...),
        x=(annotation, default),
    )
    with pytest.raises(SchemaError) as info:
        resource_from_model(model)
    assert str(info.value).startswith("Bad.x: "), str(info.value)
    assert message in str(info.value)


def test_the_id_must_be_a_string() -> None:
    with pytest.raises(SchemaError, match=r"^Bad.id: int cannot be the id"):
        resource_from_model(create_model("Bad", id=(int, ...)))
    with pytest.raises(SchemaError, match=r"^Bad: has no field 'id'"):
        resource_from_model(create_model("Bad", name=(str, ...)))
    with pytest.raises(SchemaError, match="expected a pydantic or SQLModel class"):
        resource_from_model(dict)  # type: ignore[arg-type]


def test_sources_mix_classes_resources_and_files(tmp_path: Path) -> None:
    file = tmp_path / "extra.json"
    file.write_text(
        '{"resources": [{"name": "tags", "fields": [{"name": "label", "type": "string"}]}],'
        ' "relations": [{"from": "tags", "to": "todos"}]}',
        encoding="utf-8",
    )
    schema, models = load_schema_and_models(
        [Todo, Note, {"name": "logs", "fields": []}, "extra.json"], base_dir=tmp_path
    )
    assert schema.resource_names == ["todos", "notes", "logs", "tags", "kv"]
    assert schema.relations == [{"from": "tags", "to": "todos"}]
    assert models == {"todos": Todo, "notes": Note}
    with pytest.raises(SchemaError, match="duplicate resource name 'todos'"):
        load_schema_and_models([Todo, Todo])
    with pytest.raises(SchemaError, match=r"^\$\[1\]: expected a model class"):
        load_schema_and_models([Todo, 42])


# --------------------------------------------------------------------------- import paths


def _package(tmp_path: Path, name: str, models: str) -> Path:
    """A project folder holding package ``name`` with ``models.py``, and its pyproject."""
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / name / "models.py").write_text(models, encoding="utf-8")
    return tmp_path


MODELS_PY = """
from pydantic import BaseModel

class Todo(BaseModel):
    __datafn__ = {"name": "todos"}
    id: str | None = None
    title: str
    done: bool = False

class Note(BaseModel):
    id: str | None = None
    body: str = ""

NOT_A_MODEL = 3
"""


@pytest.fixture
def clean_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """sys.path as it was, and the test's packages (``app_*``) forgotten, afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name in [n for n in sys.modules if n.startswith("app_")]:
        del sys.modules[name]


def test_import_paths_are_recognised() -> None:
    assert is_import_path("myapp.models:Todo,Note")
    assert is_import_path("models:Todo, Note")
    assert not is_import_path("schema.json")
    assert not is_import_path("conf/schema.toml")
    assert not is_import_path("C:\\app\\schema.json")
    assert not is_import_path("myapp.models:")


@pytest.mark.usefixtures("clean_imports")
def test_an_import_path_in_pyproject_resolves_against_the_project_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    _package(root, "app_one", MODELS_PY)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(
        '[tool.datafn]\nschema = "app_one.models:Todo,Note"\nstore = "memory://"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)  # not the project folder
    config = load_config(pyproject=pyproject, use_env=False)
    assert config.schema_source == "app_one.models:Todo,Note"  # not made a file path

    async def main() -> list[str]:
        async with Client(pyproject=pyproject, use_env=False) as client:
            assert set(client.models) == {"todos", "note"}
            todo = await client.table(client.models["todos"]).insert({"title": "x"})
            assert type(todo).__name__ == "Todo"
            return client.schema.resource_names

    assert asyncio.run(main()) == ["todos", "note", "kv"]
    # the server loads the same setting
    runtime = Runtime.boot(use_env=False, pyproject=pyproject)
    app = create_app(runtime)
    assert app.state.datafn.schema.resource_names == ["todos", "note", "kv"]


@pytest.mark.usefixtures("clean_imports")
def test_a_list_of_import_paths_and_files_in_pyproject(tmp_path: Path) -> None:
    _package(tmp_path, "app_two", MODELS_PY)
    (tmp_path / "more.json").write_text(
        '{"resources": [{"name": "tags", "fields": []}]}', encoding="utf-8"
    )
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[tool.datafn]\nschema = ["app_two.models:Todo", "more.json"]\n', encoding="utf-8"
    )
    config = load_config(pyproject=pyproject, use_env=False)
    assert config.schema_source == ["app_two.models:Todo", str(tmp_path / "more.json")]
    schema, models = load_schema_and_models(config.schema_source, base_dir=tmp_path)
    assert schema.resource_names == ["todos", "tags", "kv"]
    assert list(models) == ["todos"]


@pytest.mark.usefixtures("clean_imports")
def test_import_path_errors_are_one_clear_line(tmp_path: Path) -> None:
    _package(tmp_path, "app_three", MODELS_PY + "\n")
    (tmp_path / "app_three" / "broken.py").write_text("import no_such_dependency\n", "utf-8")
    (tmp_path / "app_three" / "raises.py").write_text("raise ValueError('boom')\n", "utf-8")
    cases = {
        "no_such_package.models:Todo": "module 'no_such_package' not found",
        "app_three.nothing:Todo": "module 'app_three.nothing' not found",
        "app_three.models:Missing": "module 'app_three.models' has no attribute 'Missing'",
        "app_three.models:NOT_A_MODEL": "app_three.models.NOT_A_MODEL is not a pydantic or "
        "SQLModel class (got int)",
        "app_three.broken:Todo": "importing 'app_three.broken' failed: ModuleNotFoundError: "
        "No module named 'no_such_dependency'",
        "app_three.raises:Todo": "importing 'app_three.raises' failed: ValueError: boom",
    }
    for spec, message in cases.items():
        with pytest.raises(SchemaError) as info:
            load_models(spec, tmp_path)
        text = str(info.value)
        assert message in text, text
        assert "\n" not in text
        assert text.startswith(f"{spec}: ")


def test_the_serve_schema_option(tmp_path: Path) -> None:
    assert _schema_option("myapp.models:Todo,Note") == "myapp.models:Todo,Note"
    assert _schema_option(None) is None
    file = tmp_path / "schema.json"
    file.write_text("{}", encoding="utf-8")
    assert _schema_option(str(file)) == str(file.resolve())
    with pytest.raises(click.BadParameter, match="neither a schema file nor an import path"):
        _schema_option(str(tmp_path / "missing.json"))


# --------------------------------------------------------------------------- typed tables


@contextlib.asynccontextmanager
async def model_server(store_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    """The real server on the schema ``[Todo, Note]`` (entered and left in the test's task)."""
    found = Server(store_url, tmp_path, schema=[Todo, Note])
    async with found.app.router.lifespan_context(found.app):
        yield found


async def test_a_model_round_trips_between_two_clients(store_url: str, tmp_path: Path) -> None:
    async with (
        model_server(store_url, tmp_path) as server,
        hosted(server.client("x", schema=[Todo, Note])) as x,
        hosted(server.client("y", schema=[Todo, Note])) as y,
    ):
        await x.sync.clone()
        await y.sync.clone()
        todos = x.table(Todo)
        assert isinstance(todos, ModelTable)
        due = dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.UTC)
        written = await todos.insert(Todo(title="write docs", priority=3, due=due))
        assert isinstance(written, Todo)
        assert written.id is not None and written.id.startswith("todo:")
        assert (await x.table(Note).insert({"body": "dict accepted"})).body == "dict accepted"
        await x.sync.push()
        await y.sync.pull()

        theirs = y.table(Todo)
        got = await theirs.get(written.id)
        assert isinstance(got, Todo)
        assert (got.title, got.done, got.priority, got.due) == ("write docs", False, 3, due)
        assert await theirs.get("todo:missing") is None
        merged = await theirs.merge(Todo(id=written.id, done=True))  # only `done` is sent
        assert (merged.title, merged.done) == ("write docs", True)
        await y.sync.push()
        await x.sync.pull()

        assert [(t.title, t.done) for t in await todos.query()] == [("write docs", True)]
        assert await todos.query({"done": False}) == []
        await todos.replace(Todo(id=written.id, title="rewritten"))
        assert [t.title for t in await todos.query(sort="-title")] == ["rewritten"]
        assert await todos.count() == 1
        await todos.delete(written)
        assert await todos.get(written.id) is None
        with pytest.raises(ValidationFailed, match="needs the record's id"):
            await todos.delete(Todo(title="never stored"))
        with pytest.raises(ValidationFailed, match="length must be <= 200") as info:
            await todos.insert(Todo(title="x" * 201))  # the schema's maxLength holds
        assert info.value.path == "$.title"


async def test_a_typed_watch_shows_a_remote_edit(store_url: str, tmp_path: Path) -> None:
    async with (
        model_server(store_url, tmp_path) as server,
        hosted(server.client("x", schema=[Todo, Note])) as x,
        hosted(server.client("y", schema=[Todo, Note])) as y,
    ):
        await x.sync.clone()
        await y.sync.clone()
        watch = x.table(Todo).watch({"done": False}, sort="title")
        assert await asyncio.wait_for(anext(watch), 10) == []
        await y.table(Todo).insert(Todo(id="todo:1", title="remote"))
        await y.sync.push()
        await x.sync.pull()
        seen = await asyncio.wait_for(anext(watch), 10)
        assert [type(t) for t in seen] == [Todo]
        assert seen[0].title == "remote"
        await watch.aclose()


async def test_events_are_typed_per_name(store_url: str, tmp_path: Path) -> None:
    async with (
        model_server(store_url, tmp_path) as server,
        hosted(server.client("x", schema=[Todo, Note])) as x,
    ):
        changed: list[RecordsChangedEvent] = []
        applied: list[MutationAppliedEvent] = []
        x.events.on("records_changed", changed.append)
        x.events.on("mutation_applied", applied.append)
        await x.table(Todo).insert(Todo(id="todo:1", title="a"))
        assert isinstance(changed[0], RecordsChangedEvent)
        assert (changed[0].resource, changed[0].inserted, changed[0].origin) == (
            "todos",
            ("todo:1",),
            "local",
        )
        assert (applied[0].operation, applied[0].record_id) == ("insert", "todo:1")
        synced: list[SyncAppliedEvent] = []
        x.events.on("sync_applied", synced.append)
        await x.sync.push()
        (push,) = [event for event in synced if event.phase == "push"]
        assert isinstance(push, SyncAppliedEvent) and isinstance(push.result, PushReport)
        assert push.result.applied == 1
    assert set(EVENT_TYPES) == EVENT_NAMES  # every event has its class


async def test_the_sqlite_file_reads_with_a_sqlmodel_session(tmp_path: Path) -> None:
    async with (
        model_server(f"sqlite:///{tmp_path}/client.db", tmp_path) as server,
        hosted(server.client("x", schema=[Todo, Note])) as x,
        hosted(server.client("y", schema=[Todo, Note])) as y,
    ):
        due = dt.datetime(2026, 5, 17, 8, 0, tzinfo=dt.UTC)
        await y.table(Todo).insert(
            Todo(id="todo:1", title="open", priority=2, due=due, tags=["a", "b"])
        )
        await y.table(Todo).insert(Todo(id="todo:2", title="closed", done=True))
        await y.sync.push()
        await x.sync.clone()
        engine = create_engine(f"sqlite:///{tmp_path}/x.db")
        try:
            with Session(engine) as session:
                found = session.exec(select(Todo).where(Todo.done == False)).all()  # noqa: E712
                assert [(t.id, t.title, t.priority, t.done, t.tags) for t in found] == [
                    ("todo:1", "open", 2, False, ["a", "b"])
                ]
                assert found[0].due is not None
                assert found[0].due.replace(tzinfo=dt.UTC) == due  # SQLite keeps no zone
                ordered = session.exec(select(Todo).order_by(Todo.title)).all()
                assert [t.title for t in ordered] == ["closed", "open"]
        finally:
            engine.dispose()


def test_a_blocking_client_has_typed_tables(tmp_path: Path) -> None:
    with BlockingClient(schema=[Todo, Note], store="memory://", use_env=False) as client:
        todos = client.table(Todo)
        seen: list[list[Todo]] = []
        arrived = threading.Event()

        def show(found: list[Todo]) -> None:
            seen.append(found)
            if found:
                arrived.set()

        with todos.watch(show, {"done": False}):
            written = todos.insert(Todo(title="blocking"))
            assert isinstance(written, Todo)
            assert arrived.wait(10)
        assert todos.get(written.id or "") == written
        assert [t.title for t in todos.query()] == ["blocking"]
        assert seen[-1][0].title == "blocking"
        todos.merge(Todo(id=written.id, done=True))
        assert todos.count() == 1
        todos.delete(written.id or "")
        assert todos.query() == []


class Dated(BaseModel):
    id: str | None = None
    day: dt.date | None = None
    at: dt.datetime | None = None
    since: Annotated[dt.date, PydanticField(description="required")] = dt.date(2000, 1, 1)


async def test_every_value_of_the_date_type_reads_into_date_and_datetime_fields() -> None:
    """What the schema's ``date`` type accepts from a dict client (epoch milliseconds, any ISO
    8601 form) reads into a model's ``date``/``datetime`` fields; one such record does not
    break a typed query."""
    noon = dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)
    millis = int(noon.timestamp() * 1000)
    async with Client(schema=[Dated], store="memory://", use_env=False) as client:
        raw = client.table("dated")
        await raw.insert({"id": "d1", "day": millis, "at": millis, "since": 86_400_000})
        await raw.insert({"id": "d2", "day": "2024-01-01T10:00:00Z", "at": "2024-01-01"})
        await raw.insert({"id": "d3", "day": "2024-01-01T23:30:00-05:00", "at": "20240101T1000"})
        await raw.insert({"id": "d4", "day": "2024-02-03", "at": "2024-02-03T04:05:06+01:00"})
        await raw.insert({"id": "d5", "day": None, "at": 0})
        typed = client.table(Dated)
        d1 = await typed.get("d1")
        assert d1 is not None
        assert (d1.day, d1.at, d1.since) == (noon.date(), noon, dt.date(1970, 1, 2))
        got = {d.id: (d.day, d.at) for d in await typed.query()}
        assert got == {
            "d1": (noon.date(), noon),
            "d2": (dt.date(2024, 1, 1), dt.datetime(2024, 1, 1)),
            "d3": (dt.date(2024, 1, 2), dt.datetime(2024, 1, 1, 10)),  # the UTC date
            "d4": (
                dt.date(2024, 2, 3),
                dt.datetime(2024, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            ),
            "d5": (None, dt.datetime(1970, 1, 1, tzinfo=dt.UTC)),
        }
