"""Write docs/hooks.md from the docstrings of datafn/plugin/spec.py (``--check``: verify only)."""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

from markdown_roles import markdown_docstring

from datafn.plugin import spec
from datafn.plugin.manager import ASYNC_HOOKS

TARGET = Path(__file__).with_name("hooks.md")

#: Where the API reference documents the objects the specifications refer to (longest
#: matching module first); a reference to anything else is shown as code.
API_PAGES = {
    "datafn.errors": "api/errors.md",
    "datafn.events": "api/events.md",
    "datafn.context": "api/plugins.md",
    "datafn.plugin.manager": "api/plugins.md",
    "datafn.server": "api/server.md",
}

_FIELD = re.compile(
    r"^:(?P<kind>param|return|returns|raises?)(?:\s+(?P<name>[^:]+))?:\s*(?P<text>.*)$"
)


def api_link(shown: str, name: str) -> str:
    """A Markdown link to the API page documenting ``name`` (plain code when none does)."""
    for module in sorted(API_PAGES, key=len, reverse=True):
        if name.startswith(module + "."):
            return f"[`{shown}`]({API_PAGES[module]}#{name})"
    return f"`{shown}`"


def to_markdown(doc: str) -> str:
    """A specification's docstring as Markdown: roles become links to the API reference,
    ``:param x:`` fields a list of parameters, ``:return:`` a "Returns" paragraph, and
    reST's double-backtick literals Markdown's single-backtick code."""
    out: list[str] = []
    in_field = False
    text = re.sub(r"``([^`]+)``", r"`\1`", markdown_docstring(doc, api_link))
    for line in text.split("\n"):
        field = _FIELD.match(line)
        if field:
            kind, name, text = field["kind"], field["name"], field["text"]
            if kind == "param":
                if not (out and out[-1].startswith(("- ", "  "))):
                    out += ["**Parameters**", ""]
                out.append(f"- `{name.strip()}`: {text}")
            else:
                if out and out[-1]:
                    out.append("")
                label = "Returns" if kind.startswith("return") else "Raises"
                out.append(f"**{label}:** {text}")
            in_field = True
        elif in_field and line.startswith("    "):
            out.append(("  " if out[-1].startswith(("- ", "  ")) else "") + line.strip())
        else:
            in_field = False
            out.append(line)
    return "\n".join(out)


def render() -> str:
    lines = [
        "# Hook reference",
        "",
        "Generated from `datafn/plugin/spec.py` by `docs/generate_hook_reference.py`;",
        "do not edit by hand. The plugin guide is [plugins.md](plugins.md).",
        "",
    ]
    source = inspect.getsource(spec)
    names = [n for n, f in vars(spec).items() if n.startswith("datafn_") and callable(f)]
    names.sort(key=source.index)
    for name in names:
        fn = getattr(spec, name)
        opts = getattr(fn, "datafn_spec", {}) or {}
        tags = ["async" if name in ASYNC_HOOKS else "sync"]
        if opts.get("firstresult"):
            tags.append("firstresult")
        signature = f"{name}({', '.join(inspect.signature(fn).parameters)})"
        lines += [f"## `{signature}`", "", f"*{', '.join(tags)}*", ""]
        lines += [to_markdown((inspect.getdoc(fn) or "").strip()), ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is out of date: run python docs/generate_hook_reference.py")
            return 1
        print(f"{TARGET} is up to date")
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
