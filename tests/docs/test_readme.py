"""README.md's quick start stays true.

Its commands install the checkout into a fresh environment and run ``datafn demo``, or install
nox and run ``nox -s tests``. Running them costs a virtual environment each; the tutorial's
test already does the same install and the same ``datafn demo`` in a fresh environment
(tests/docs/test_tutorial.py), so this test checks what the README's commands name: the
folders it installs are distributions of this checkout, and the command and the nox session
it runs exist. (The README's Python example runs with the other documentation blocks.)
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def quick_start_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands: list[list[str]] = []
    for block in re.findall(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            commands += [shlex.split(part) for part in line.split("&&") if part.strip()]
    return commands


def test_the_quick_start_names_what_exists() -> None:
    commands = quick_start_commands()
    assert ["python3", "-m", "venv", ".venv"] in commands
    installed = [arg for c in commands if c[:2] == [".venv/bin/pip", "install"] for arg in c[2:]]
    folders = [arg for arg in installed if arg not in ("-e", "nox")]
    assert folders == [".", "./contrib/datafn-sqlmodel"]
    names = {
        tomllib.loads((ROOT / folder / "pyproject.toml").read_text(encoding="utf-8"))["project"][
            "name"
        ]
        for folder in folders
    }
    assert names == {"datafn", "datafn-sqlmodel"}

    assert [".venv/bin/datafn", "demo"] in commands
    result = subprocess.run(
        [sys.executable, "-m", "datafn", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    assert [".venv/bin/nox", "-s", "tests"] in commands
    noxfile = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    assert re.search(r"@nox\.session[^\n]*\ndef tests\(", noxfile)
