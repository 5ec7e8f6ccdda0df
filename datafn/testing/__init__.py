"""Test support for datafn and its plugins: conformance suites and an opt-in pytest plugin."""
