"""docs/tutorial.md followed step by step, as a newcomer would, in a fresh folder.

The test reads the tutorial's code blocks in order and does what they say:

* a ```python block whose first line is ``# name.py`` is written to that file;
* a ```json or ```toml block is written to the file the paragraph before it names last
  (```Save it as `schema.json`:``);
* each line of a ```sh block is a command, run by bash in the folder; after
  ``. .venv/bin/activate`` the commands run in that (fresh) virtual environment.
  ``datafn serve`` is started in the background ("a second terminal") and waited for, and a
  comment that says Ctrl-C stops the server stops it (SIGINT);
* a block after ``<!-- runs-until-stopped: … -->`` runs until its first line of output and is
  then stopped with SIGINT, as Ctrl-C would; a block after ``<!-- skip: next "…" -->`` is
  left out (the reason is in the tutorial).

Two things differ from a reader's machine, and only these: ``/path/to/datafn`` is this
checkout, and the server listens on a free port instead of 8787 (the address is replaced in
files and commands, and ``DATAFN_SERVER__PORT`` is set). pip's cache is used as it is.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from datafn.testing.process import free_port

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
#: seconds one command may take (pip install included)
COMMAND_TIMEOUT = 600.0
#: seconds the server gets to answer /status, and a program that runs until stopped to print
START_TIMEOUT = 60.0

pytestmark = pytest.mark.slow

_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)
_MARKER = re.compile(r"<!--\s*(runs-until-stopped|skip):?(.*?)-->", re.DOTALL)
_FILE_NAME = re.compile(r"`([\w.-]+\.(?:json|toml|py))`")


@dataclass
class Block:
    language: str
    text: str
    before: str  # the Markdown between the previous block and this one
    marker: str | None  # "runs-until-stopped" or "skip"


def tutorial_blocks(markdown: str) -> list[Block]:
    blocks: list[Block] = []
    position = 0
    for match in _BLOCK.finditer(markdown):
        before = markdown[position : match.start()]
        markers = _MARKER.findall(before)
        marker = markers[-1][0] if markers and before.rstrip().endswith("-->") else None
        blocks.append(Block(match.group(1), match.group(2), before, marker))
        position = match.end()
    return blocks


def test_the_blocks_are_found() -> None:
    blocks = tutorial_blocks(TUTORIAL.read_text(encoding="utf-8"))
    languages = [block.language for block in blocks]
    assert languages.count("sh") >= 5 and "python" in languages and "json" in languages
    assert any(block.marker == "runs-until-stopped" for block in blocks)


class Tutorial:
    """The reader's folder, terminal and server terminal."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.activated = False
        self.server: subprocess.Popen[bytes] | None = None
        self.transcript: list[str] = []
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DATAFN_", "PYTHON", "VIRTUAL_ENV", "PIP_REQUIRE"))
        }
        self.env["DATAFN_SERVER__PORT"] = str(port)
        self.env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        # output line by line, as on the reader's terminal (a pipe would buffer it)
        self.env["PYTHONUNBUFFERED"] = "1"

    def text(self, written: str) -> str:
        """What the reader types, for this machine."""
        return written.replace("127.0.0.1:8787", f"127.0.0.1:{self.port}").replace(
            "/path/to/datafn", shlex.quote(str(ROOT))
        )

    def script(self, command: str) -> str:
        prefix = ". .venv/bin/activate && " if self.activated else ""
        return prefix + command

    def run(self, command: str) -> str:
        if re.fullmatch(r"(\.|source) \.venv/bin/activate", command):
            self.activated = True
        if command == "datafn serve":
            self.start_server()
            return ""
        result = subprocess.run(
            ["bash", "-c", self.script(self.text(command))],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        self.transcript.append(f"$ {command}\n{result.stdout}{result.stderr}")
        assert result.returncode == 0, f"`{command}` failed:\n{self.transcript[-1]}"
        return result.stdout

    def start_server(self) -> None:
        assert self.server is None, "the tutorial starts the server twice"
        log = (self.folder / "server.log").open("ab")
        self.server = subprocess.Popen(
            ["bash", "-c", self.script("exec datafn serve")],
            cwd=self.folder,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        status = f"http://127.0.0.1:{self.port}/datafn/status"
        while True:
            try:
                if httpx.get(status, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.server.poll() is not None or time.monotonic() > deadline:
                log_text = (self.folder / "server.log").read_text(errors="replace")
                raise AssertionError(f"`datafn serve` did not start:\n{log_text[-3000:]}")
            time.sleep(0.1)

    def stop_server(self) -> None:
        server, self.server = self.server, None
        assert server is not None, "the tutorial stops a server that is not running"
        server.send_signal(signal.SIGINT)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            raise AssertionError("`datafn serve` did not stop on Ctrl-C") from None
        assert code in (0, 130, -signal.SIGINT), f"`datafn serve` exited with {code} on Ctrl-C"

    def run_until_first_line(self, command: str) -> str:
        """Start a program that runs until stopped; Ctrl-C after its first line of output."""
        process = subprocess.Popen(
            ["bash", "-c", self.script("exec " + self.text(command))],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        stdout = process.stdout
        assert stdout is not None
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(stdout.readline()))
        reader.start()
        reader.join(START_TIMEOUT)
        process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            rest, _ = process.communicate()
            raise AssertionError(f"`{command}` did not stop on Ctrl-C:\n{rest}") from None
        reader.join(5)
        output = (first[0] if first else "") + rest
        self.transcript.append(f"$ {command}  (stopped after its first line)\n{output}")
        assert first and first[0].strip(), f"`{command}` printed nothing:\n{output}"
        last = output.strip().splitlines()[-1]
        assert "Traceback" not in output or last == "KeyboardInterrupt", self.transcript[-1]
        assert process.returncode in (0, 1, 130, -signal.SIGINT), self.transcript[-1]
        return output

    def close(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.kill()
            self.server.wait()


def _runs(command: str, program: str) -> bool:
    """Whether ``command`` is ``program``, without arguments or with options."""
    return command == program or command.startswith(program + " --")


def _commands(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_the_tutorial_runs_step_by_step(tmp_path: Path) -> None:
    folder = tmp_path / "todo"
    folder.mkdir()
    tutorial = Tutorial(folder, free_port())
    #: (command, what its output shows), checked in this order as the commands come
    expected = [
        ("python todo.py buy milk", "buy milk"),
        ("python todo.py water the plants", "offline; 1 change(s) will be sent later"),
        ("python todo.py", "water the plants"),
        ("python follow.py", "['buy milk', 'call the plumber', 'water the plants']"),
        ("python todo.py", "buy oat milk"),
        ("datafn sync", "syncing http://127.0.0.1"),
    ]
    try:
        for block in tutorial_blocks(TUTORIAL.read_text(encoding="utf-8")):
            if block.marker == "skip":
                continue
            if block.language in ("python", "json", "toml"):
                first_line = block.text.partition("\n")[0]
                if block.language == "python":
                    name = re.fullmatch(r"# ([\w.-]+\.py)", first_line)
                    assert name, f"a tutorial program must start with `# name.py`: {first_line}"
                    file_name = name.group(1)
                else:
                    names = _FILE_NAME.findall(block.before)
                    assert names, f"no file named before the {block.language} block"
                    file_name = names[-1]
                (folder / file_name).write_text(tutorial.text(block.text), encoding="utf-8")
                continue
            assert block.language == "sh", f"unexpected ```{block.language} block"
            for command in _commands(block.text):
                if command.startswith("#"):
                    if "Ctrl-C stops the server" in command:
                        tutorial.stop_server()
                    continue
                if block.marker == "runs-until-stopped":
                    output = tutorial.run_until_first_line(command)
                else:
                    output = tutorial.run(command)
                if expected and _runs(command, expected[0][0]):
                    wanted = expected.pop(0)[1]
                    assert wanted in output, f"`{command}` should show {wanted!r}:\n{output}"
        assert not expected, f"the tutorial no longer runs {expected[0][0]!r}"
        assert (folder / "todo-server.db").exists()
    except BaseException:
        print("\n".join(tutorial.transcript), file=sys.stderr)
        raise
    finally:
        tutorial.close()
