from datafn.testing.pytest_plugin import datafn_simulation  # noqa: F401
