"""The documentation site's promises that need no MkDocs: every page is in the navigation,
the hook reference shows no reST, and the docstring conversion of docs/markdown_roles.py
turns Sphinx idioms into Markdown (``nox -s docs`` builds the site itself, strictly)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def markdown_roles() -> ModuleType:
    spec = importlib.util.spec_from_file_location("markdown_roles", DOCS / "markdown_roles.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("markdown_roles", module)
    spec.loader.exec_module(module)
    return module


def test_every_page_is_in_the_navigation() -> None:
    nav = _mkdocs().split("\nnav:\n", 1)[1]
    entries = re.findall(r"^\s*-.*?([\w/.-]+\.md)\s*$", nav, re.M)
    assert sorted(entries) == sorted(set(entries)), "a page is listed twice in mkdocs.yml"
    listed = set(entries)
    pages = {str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md")}
    assert pages - listed == set(), "add these pages to the nav of mkdocs.yml"
    assert listed - pages == set(), "the nav of mkdocs.yml lists pages that do not exist"


def _mkdocs() -> str:
    return (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def test_the_docs_session_builds_strictly() -> None:
    noxfile = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    docs_session = noxfile.split("def docs(", 1)[1].split("\n@nox.session", 1)[0]
    assert '"mkdocs", "build", "--strict"' in docs_session
    assert "generate_hook_reference.py" in docs_session
    assert "strict: true" in _mkdocs()


def test_the_hook_reference_shows_no_rest() -> None:
    text = (DOCS / "hooks.md").read_text(encoding="utf-8")
    assert not re.search(r":(class|func|meth|mod|data|attr|param|return):", text)
    assert "``" not in text
    assert "[`Veto`](api/errors.md#datafn.errors.Veto)" in text


def test_roles_become_links_with_the_shown_text() -> None:
    module = markdown_roles()
    links: list[tuple[str, str]] = []

    def link(shown: str, name: str) -> str:
        links.append((shown, name))
        return f"<{name}>"

    text = module.convert_roles(
        "See :class:`~datafn.errors.Veto`, :func:`load_schema`, :meth:`Schema.resource` and "
        ":mod:`the errors <datafn.errors>`.",
        link,
    )
    assert text == "See <datafn.errors.Veto>, <load_schema>, <Schema.resource> and <datafn.errors>."
    assert links == [
        ("Veto", "datafn.errors.Veto"),
        ("load_schema()", "load_schema"),
        ("Schema.resource()", "Schema.resource"),
        ("the errors", "datafn.errors"),
    ]


def test_literal_blocks_and_definition_lists_become_markdown() -> None:
    module = markdown_roles()
    doc = "\n".join(
        [
            "The tree of :class:`Error`::",
            "",
            "    Error",
            "    └── :class:`Child`",
            "",
            "``fixture``",
            "    What it gives,",
            "    on two lines.",
            "",
            ":param x: a :class:`Y`",
            "    and more.",
        ]
    )
    out = module.markdown_docstring(doc, lambda shown, name: f"[{shown}]")
    assert out.split("\n") == [
        "The tree of [Error]:",
        "",
        "    Error",
        "    └── :class:`Child`",  # literal blocks are left as they are
        "",
        "``fixture``",
        ":   What it gives,",
        "    on two lines.",
        "",
        ":param x: a [Y]",  # fields are left to griffe's Sphinx parser
        "    and more.",
    ]
