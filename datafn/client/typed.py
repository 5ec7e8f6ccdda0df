"""Typed tables: ``client.table(Todo)`` reads and writes instances of a pydantic or SQLModel
class instead of dicts.

::

    todos = client.table(Todo)  # ModelTable[Todo]
    todo = await todos.insert(Todo(title="write docs"))  # -> Todo (with its generated id)
    open_ones = await todos.query({"done": False})  # -> list[Todo]

Records are validated against the schema exactly as with :class:`~datafn.client.client.Table`
(which does the work; ``.records`` is that untyped table); instances are made from the stored
records with ``Model.model_validate``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic

from datafn.errors import ValidationFailed
from datafn.models import ModelT, record_from_model, record_to_model

if TYPE_CHECKING:
    from datafn.client.client import Table

__all__ = ["ModelTable"]


class ModelTable(Generic[ModelT]):
    """The records of one resource as instances of ``model``: ``client.table(Todo)``.

    Every write accepts an instance or a dict; a ``None`` (or missing) id gets a generated
    one. ``merge`` of an instance sends only the fields given when it was made
    (``Todo.model_construct(id=todo_id, done=True)`` changes ``done`` only).
    """

    def __init__(self, table: Table, model: type[ModelT]) -> None:
        self.records = table
        self.model = model
        self.name = table.name

    def __repr__(self) -> str:
        return f"<ModelTable {self.name} of {self.model.__name__}>"

    def _make(self, record: Mapping[str, Any]) -> ModelT:
        return record_to_model(self.model, record)

    async def insert(
        self, record: ModelT | Mapping[str, Any], *, guard: Mapping[str, Any] | None = None
    ) -> ModelT:
        """Insert a new record; returns it as stored (with its id)."""
        return self._make(await self.records.insert(record_from_model(record), guard=guard))

    async def replace(
        self, record: ModelT | Mapping[str, Any], *, guard: Mapping[str, Any] | None = None
    ) -> ModelT:
        """Write the full record (created when missing)."""
        return self._make(await self.records.replace(record_from_model(record), guard=guard))

    async def merge(
        self, record: ModelT | Mapping[str, Any], *, guard: Mapping[str, Any] | None = None
    ) -> ModelT:
        """Update some fields of the record with the same id: a dict's keys, or the fields
        an instance was given explicitly (``Todo.model_construct(id=todo_id, done=True)``; a
        SQLModel table class also as ``Todo(id=todo_id, done=True)``, which it does not
        validate, where a pydantic model would want its required fields)."""
        body = record_from_model(record, only_set=True)
        return self._make(await self.records.merge(body, guard=guard))

    async def delete(self, record: str | ModelT, *, guard: Mapping[str, Any] | None = None) -> None:
        """Delete the record (by id, or the instance's id)."""
        record_id = record if isinstance(record, str) else getattr(record, "id", None)
        if not isinstance(record_id, str) or not record_id:
            raise ValidationFailed(
                "a delete needs the record's id (the instance has none)",
                code="DFQL_INVALID",
                path="$.id",
            )
        await self.records.delete(record_id, guard=guard)

    async def get(self, record_id: str) -> ModelT | None:
        """The record as an instance, or None."""
        record = await self.records.get(record_id)
        return None if record is None else self._make(record)

    async def query(
        self,
        filters: Mapping[str, Any] | None = None,
        *,
        sort: str | Sequence[str] = (),
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ModelT]:
        """Records matching ``filters`` as instances (see
        :meth:`Table.query <datafn.client.client.Table.query>`)."""
        found = await self.records.query(filters, sort=sort, limit=limit, offset=offset)
        return [self._make(record) for record in found]

    async def count(self) -> int:
        """How many records the local store holds."""
        return await self.records.count()

    async def watch(
        self,
        filters: Mapping[str, Any] | None = None,
        *,
        sort: str | Sequence[str] = (),
        limit: int | None = None,
        offset: int = 0,
    ) -> AsyncIterator[list[ModelT]]:
        """The query's result now and each time it changes, as instances (see
        :meth:`Table.watch <datafn.client.client.Table.watch>`)."""
        results = self.records.watch(filters, sort=sort, limit=limit, offset=offset)
        try:
            async for found in results:
                yield [self._make(record) for record in found]
        finally:
            await results.aclose()  # type: ignore[attr-defined]
