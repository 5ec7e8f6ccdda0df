"""The harness that runs the documentation's blocks fails when a block is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from sybil import Sybil

from datafn.errors import ConfigError
from tests.docs import examples


def run_page(tmp_path: Path, markdown: str) -> list[str]:
    """Evaluate every block of a page as the docs tests do; the printed lines of the page."""
    page = tmp_path / "page.md"
    page.write_text(markdown, encoding="utf-8")
    sybil: Sybil = examples._sybil(tmp_path, ["*.md"])
    document = sybil.parse(page)
    examples.setup(document.namespace)
    try:
        for example in document.examples():
            example.evaluate()
        return list(document.namespace["__datafn_docs__"].outputs)
    finally:
        examples.teardown(document.namespace)


def test_top_level_await_runs_against_the_docs_server(tmp_path: Path) -> None:
    outputs = run_page(
        tmp_path,
        "```python\nimport datafn\n\nasync with datafn.Client() as client:\n"
        '    await client.table("todos").insert({"title": "x"})\n'
        "    report = await client.sync.push()\n"
        "    print(report.applied)\n```\n",
    )
    assert outputs == ["1"]


def test_a_wrong_block_fails(tmp_path: Path) -> None:
    with pytest.raises(NameError):
        run_page(tmp_path, "```python\nprint(undefined_name)\n```\n")


def test_a_block_that_runs_until_stopped_is_stopped_after_its_first_output(
    tmp_path: Path,
) -> None:
    outputs = run_page(
        tmp_path,
        "<!-- runs-until-stopped: forever -->\n```python\nwhile True:\n    print('tick')\n```\n",
    )
    assert outputs == ["tick"]


def test_a_block_that_runs_until_stopped_must_print(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="without any output"):
        run_page(tmp_path, "<!-- runs-until-stopped: x -->\n```python\nx = 1\n```\n")


def test_a_failing_test_module_fails(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="did not pass"):
        run_page(tmp_path, "```python\ndef test_it():\n    assert 1 == 2\n```\n")


def test_toml_must_parse(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="does not parse"):
        run_page(tmp_path, "```toml\n[tool.datafn\n```\n")


def test_datafn_toml_must_be_accepted_by_the_loader(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="push-batch-sise"):
        run_page(tmp_path, "```toml\n[tool.datafn.sync]\npush-batch-sise = 5\n```\n")
    with pytest.raises(ConfigError, match="max-batch-size"):
        run_page(tmp_path, '```toml\n[tool.datafn.guard]\nmax-batch-size = "many"\n```\n')
    run_page(tmp_path, "```toml\n[tool.datafn.sync]\npush-batch-size = 5\n```\n")
