"""The memory server store runs the server-store conformance suite."""

from __future__ import annotations

import pytest

from datafn.schema import Schema
from datafn.server.memory import MemoryServerStore
from datafn.testing.server_store import MakeStore, ServerStoreSuite


class TestMemoryServerStore(ServerStoreSuite):
    persistent = False

    @pytest.fixture
    def make_store(self) -> MakeStore:
        def make(schema: Schema) -> MemoryServerStore:
            return MemoryServerStore("memory://", schema)

        return make
