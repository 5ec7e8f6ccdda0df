"""The client's public names are exported and ``__all__`` is honest."""

from __future__ import annotations

import datafn
import datafn.client


def test_client_all_is_honest() -> None:
    for name in datafn.client.__all__:
        assert hasattr(datafn.client, name), name
    public = {n for n in vars(datafn.client) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(datafn.client.__all__)


def test_top_level_exports() -> None:
    assert datafn.Client is datafn.client.Client
    assert datafn.BlockingClient is datafn.client.BlockingClient
    assert {"Client", "BlockingClient", "Table"} <= set(datafn.__all__)
