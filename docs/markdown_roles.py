"""The reST idioms of datafn's docstrings, as Markdown: for the docs site and the hook reference.

The docstrings are written in Sphinx style: roles such as ``:class:`~datafn.errors.Veto```,
``::`` before a literal block, and definition lists (a term, then its description indented
below it). Markdown has none of these, so they would show as raw text.

- :func:`convert_roles` turns every role into a link made by a callback: the hook reference
  (``docs/generate_hook_reference.py``) links to the API pages, which works on GitHub too.
- :class:`SphinxRoles` is a griffe extension (``extensions`` in ``mkdocs.yml``) that rewrites
  the docstrings mkdocstrings renders: roles become cross-references that are links when the
  target is documented and plain code otherwise, ``::`` becomes ``:`` and definition lists
  become Markdown definition lists.

Only the standard library is needed unless the extension is used.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["ROLE", "SphinxRoles", "convert_roles", "markdown_docstring", "parse_role"]

#: A Sphinx role of the Python domain: ``:class:`~datafn.errors.Veto```.
ROLE = re.compile(
    r":(?:py:)?(?P<kind>class|func|meth|attr|data|mod|exc|obj|const):`(?P<target>[^`]+)`"
)

_EXPLICIT = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")


def parse_role(kind: str, target: str) -> tuple[str, str]:
    """The text to show and the dotted name a role refers to.

    ``~datafn.errors.Veto`` shows ``Veto``; ``Title <datafn.x>`` shows ``Title``; functions and
    methods are shown with ``()`` as Sphinx shows them.
    """
    explicit = _EXPLICIT.match(target)
    if explicit:
        return explicit["title"], explicit["target"].lstrip("~.")
    name = target.lstrip("~.")
    shown = name.rsplit(".", 1)[-1] if target.startswith("~") else name
    if kind in ("func", "meth") and not shown.endswith(")"):
        shown += "()"
    return shown, name


def convert_roles(text: str, link: Callable[[str, str], str]) -> str:
    """``text`` with every role replaced by ``link(shown, name)``."""

    def replace(match: re.Match[str]) -> str:
        shown, name = parse_role(match["kind"], match["target"])
        return link(shown, name)

    return ROLE.sub(replace, text)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def markdown_docstring(text: str, link: Callable[[str, str], str]) -> str:
    """A Sphinx-style docstring as Markdown (the field lists ``:param x:`` are left alone:
    griffe's Sphinx parser reads them).

    Roles go through :func:`convert_roles`; a paragraph ending in ``::`` ends in ``:`` (the
    indented block after it is a Markdown code block already); a definition list
    (``term`` on one line, its description indented on the next) becomes the ``term`` /
    ``:   description`` form of Markdown's definition lists. Literal blocks are left as they
    are.
    """
    lines = text.split("\n")
    out: list[str] = []
    literal_indent: int | None = None  # inside a literal block indented more than this
    previous_blank = True
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        if literal_indent is not None:
            if not stripped or _indent(line) > literal_indent:
                out.append(line)
                previous_blank = not stripped
                index += 1
                continue
            literal_indent = None
        if stripped.endswith("::"):
            literal_indent = _indent(line)
            line = line.rstrip()
            # "text::" reads "text:"; "text ::" and a lone "::" only announce the block
            line = line[:-3].rstrip() if stripped == "::" or line.endswith(" ::") else line[:-1]
            out.append(convert_roles(line, link))
            previous_blank = False
            index += 1
            continue
        following = lines[index + 1] if index + 1 < len(lines) else ""
        is_term = (
            previous_blank
            and stripped
            and _indent(line) == 0
            and not stripped.startswith((":", "-", "*", ">>>"))
            and following.strip()
            and _indent(following) >= 4
        )
        if is_term:
            out.append(convert_roles(line, link))
            index += 1
            first = True
            while index < len(lines) and lines[index].strip() and _indent(lines[index]) >= 4:
                body = convert_roles(lines[index].strip(), link)
                out.append((":   " if first else "    ") + body)
                first = False
                index += 1
            previous_blank = False
            continue
        out.append(convert_roles(line, link))
        previous_blank = not stripped
        index += 1
    return "\n".join(out)


def autoref(shown: str, name: str) -> str:
    """An optional cross-reference of mkdocs-autorefs: a link when ``name`` is documented on
    the site, plain code otherwise (never a warning)."""
    return f'<autoref identifier="{name}" optional><code>{shown}</code></autoref>'


try:
    import griffe
except ImportError:  # the hook reference generator needs only the functions above
    pass
else:

    class SphinxRoles(griffe.Extension):
        """Rewrite every docstring of a loaded package with :func:`markdown_docstring`.

        A role's target is resolved like a name in the docstring's scope (``Schema`` inside
        ``datafn.schema`` is ``datafn.schema.Schema``); dotted names are taken as written.
        """

        def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
            self._walk(pkg, set())

        def _walk(self, obj: griffe.Object, seen: set[str]) -> None:
            if obj.path in seen:
                return
            seen.add(obj.path)
            if obj.docstring is not None:
                obj.docstring.value = markdown_docstring(
                    obj.docstring.value, lambda shown, name: autoref(shown, _resolve(obj, name))
                )
            for member in list(obj.members.values()):
                if not member.is_alias:
                    self._walk(member, seen)  # type: ignore[arg-type]


def _resolve(obj: Any, name: str) -> str:
    """The full dotted name of ``name`` as seen from ``obj``'s scope (as written on failure)."""
    first, _, rest = name.partition(".")
    try:
        resolved = str(obj.resolve(first))
    except Exception:
        return name
    return f"{resolved}.{rest}" if rest else resolved
