# In a repository of its own, `-p datafn.testing.pytest_plugin` (pyproject addopts) is enough;
# inside datafn's repository the root configuration applies, so the fixtures are imported.
from datafn.testing.pytest_plugin import datafn_client, datafn_project, datafn_server  # noqa: F401
