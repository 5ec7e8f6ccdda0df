"""Opt-in pytest plugin for datafn plugin authors (fixtures are added as features land).

Enable it with ``-p datafn.testing.pytest_plugin``.
"""
