"""The built-in memory store passes the client store conformance suite."""

from __future__ import annotations

import pytest

from datafn.builtins.client_memory_store import MemoryClientStore
from datafn.testing.client_store import ClientStoreConformance


class TestMemoryClientStore(ClientStoreConformance):
    @pytest.fixture
    def store_factory(self):  # type: ignore[no-untyped-def]
        return lambda schema: MemoryClientStore("memory://", schema, None)
