"""Write docs/hooks.md from the docstrings of datafn/plugin/spec.py (``--check``: verify only)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from datafn.plugin import spec
from datafn.plugin.manager import ASYNC_HOOKS

TARGET = Path(__file__).with_name("hooks.md")


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
        lines += [(inspect.getdoc(fn) or "").strip(), ""]
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
