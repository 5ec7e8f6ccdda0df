"""The client's public names are exported and ``__all__`` is honest."""

from __future__ import annotations

import datafn
import datafn.client


def test_client_all_is_honest() -> None:
    for name in datafn.client.__all__:
        assert hasattr(datafn.client, name), name
    public = {
        n
        for n in vars(datafn.client)
        if not n.startswith("_") and n[0].isupper() and n != "TYPE_CHECKING"
    }
    assert public <= set(datafn.client.__all__)


def test_client_names_are_imported_on_first_use() -> None:
    import subprocess
    import sys

    code = (
        "import sys, datafn.client; assert 'datafn.client.blocking' not in sys.modules; "
        "datafn.client.Client; assert 'datafn.client.blocking' not in sys.modules; "
        "datafn.client.BlockingClient; assert 'datafn.client.blocking' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_top_level_exports() -> None:
    assert datafn.Client is datafn.client.Client
    assert datafn.BlockingClient is datafn.client.BlockingClient
    assert {"Client", "BlockingClient", "Table"} <= set(datafn.__all__)
