"""The datafn.testing fixtures for the plugin tests (opt-in: imported here, never autoloaded)."""

from datafn.testing.pytest_plugin import (  # noqa: F401
    datafn_client,
    datafn_project,
    datafn_server,
    hook_recorder,
)
