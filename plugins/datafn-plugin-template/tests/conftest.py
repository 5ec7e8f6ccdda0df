# The datafn.testing fixtures (datafn_project, hook_recorder, datafn_server, datafn_client) are
# enabled by `-p datafn.testing.pytest_plugin` in pyproject.toml. Inside datafn's own
# repository the root configuration applies instead, so they are also imported here.
from datafn.testing.pytest_plugin import (  # noqa: F401
    datafn_client,
    datafn_project,
    datafn_server,
    hook_recorder,
)
