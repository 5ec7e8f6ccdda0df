"""The code blocks of README.md and docs/**/*.md, collected as tests (hooked up in the root
conftest.py).

Sybil rather than pytest-examples: Sybil parses Markdown into ordered regions that share a
namespace per document, runs a per-document setup and teardown, lets each kind of block have
its own evaluator (Python, TOML) and understands directives in HTML comments (``<!-- skip:
next "reason" -->``), all of which these docs need; pytest-examples checks each block on its
own and is built around formatting and linting snippets rather than running a document.

What a document gets, the way a reader following the docs would have it:

* a fresh temporary folder as the working directory, holding the tutorial's ``schema.json``
  and a ``pyproject.toml`` with the tutorial's ``[tool.datafn]`` settings (schema, local
  store, ``sync.remote``), and no ``DATAFN_*`` variables;
* a real ``datafn serve`` (one per test session, on SQLite, on a free port).  The docs show
  the default address ``127.0.0.1:8787``; the blocks run against the test server's port
  instead (that one substitution is the only change made to a block's text).

How each ```python block runs:

* A block that defines pytest tests (``def test_…`` / ``class Test…``) is a test module: it
  is written to a fresh folder whose pytest configuration is the one the plugin template
  ships (``asyncio_mode = "auto"``, ``-p datafn.testing.pytest_plugin``) and run by pytest in
  a child process; it must pass, and at least one test must have run.
* Any other block runs in the document's namespace.  Top-level ``await``, ``async with`` and
  ``async for`` are allowed (as in ``python -m asyncio``); such a block runs on a new event
  loop.  Every block is bounded in time (``BLOCK_TIMEOUT``).
* A block preceded by ``<!-- runs-until-stopped: … -->`` runs until it is stopped, like a
  program that shows data as it changes (``async for … in table.watch()``): the test stops
  it, as Ctrl-C would, right after its first line of output, and fails if there was none.

Every ```toml block must parse (tomllib); one that holds a ``[tool.datafn…]`` table must also
be accepted by datafn's configuration loader with every installed plugin's settings
(``Runtime.boot``, as ``datafn config`` does).
"""

from __future__ import annotations

import ast
import atexit
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from sybil import Document, Example, Region, Sybil
from sybil.evaluators.python import pad
from sybil.integration.pytest import pytest_integration
from sybil.parsers.markdown import CodeBlockParser, SkipParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer

from datafn.testing.process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
#: the address the docs show; blocks run against the test server's instead
DOC_ADDRESS = "127.0.0.1:8787"
#: seconds one block may take (a slow block fails rather than hanging the suite)
BLOCK_TIMEOUT = 60.0
#: seconds a block that is a pytest module may take
TEST_MODULE_TIMEOUT = 300.0
#: the pytest configuration a block that is a test module runs with (the plugin template's)
PYTEST_CONFIG = """\
[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
addopts = "-p datafn.testing.pytest_plugin -p no:cacheprovider"
"""
_STATE = "__datafn_docs__"
_TEST_MODULE = re.compile(r"^(?:async\s+def\s+test_|def\s+test_|class\s+Test)", re.MULTILINE)


def tutorial_schema() -> dict[str, Any]:
    """The schema of the tutorial (its first ```json block): the docs' example project."""
    text = (DOCS / "tutorial.md").read_text(encoding="utf-8")
    match = re.search(r"^```json\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert match, "docs/tutorial.md has no ```json schema block"
    schema: dict[str, Any] = json.loads(match.group(1))
    return schema


def project_pyproject(remote: str) -> str:
    """The example project's pyproject.toml (the tutorial's ``[tool.datafn]`` settings)."""
    return (
        '[project]\nname = "todo"\nversion = "0.1.0"\n\n'
        '[tool.datafn]\nschema = "schema.json"\nstore = "sqlite:///todo-local.db"\n\n'
        f'[tool.datafn.sync]\nremote = "{remote}"\n'
    )


class _Server:
    """One ``datafn serve`` for the whole test session, started when first needed."""

    process: ServerProcess | None = None
    folder: Path | None = None

    @classmethod
    def get(cls) -> ServerProcess:
        if cls.process is None:
            cls.folder = Path(tempfile.mkdtemp(prefix="datafn-docs-server-"))
            schema = cls.folder / "schema.json"
            schema.write_text(json.dumps(tutorial_schema()), encoding="utf-8")
            process = ServerProcess(
                schema, database=f"sqlite:///{cls.folder / 'server.db'}", cwd=cls.folder
            )
            process.start()
            cls.process = process
            atexit.register(cls.stop)
        return cls.process

    @classmethod
    def stop(cls) -> None:
        process, cls.process = cls.process, None
        if process is not None:
            process.stop()
        if cls.folder is not None:
            shutil.rmtree(cls.folder, ignore_errors=True)


@dataclass
class _DocumentState:
    project: Path
    previous_cwd: str
    saved_env: dict[str, str]
    port: int
    stop_after_output: bool = False
    outputs: list[str] = field(default_factory=list)


def setup(namespace: dict[str, Any]) -> None:
    """A fresh project folder as the working directory, and the session's server."""
    server = _Server.get()
    project = Path(tempfile.mkdtemp(prefix="datafn-docs-"))
    (project / "schema.json").write_text(
        json.dumps(tutorial_schema(), indent=2) + "\n", encoding="utf-8"
    )
    (project / "pyproject.toml").write_text(project_pyproject(server.remote), encoding="utf-8")
    saved_env = {k: v for k, v in os.environ.items() if k.startswith("DATAFN_")}
    for key in saved_env:
        del os.environ[key]
    namespace[_STATE] = _DocumentState(project, os.getcwd(), saved_env, server.port)
    os.chdir(project)


def teardown(namespace: dict[str, Any]) -> None:
    state: _DocumentState = namespace.pop(_STATE)
    os.chdir(state.previous_cwd)
    os.environ.update(state.saved_env)
    shutil.rmtree(state.project, ignore_errors=True)


class StopExample(Exception):
    """Raised by ``print`` to stop a block that runs until it is stopped (like Ctrl-C)."""


class _Timeout(Exception):
    pass


@contextmanager
def _bounded(seconds: float, what: str) -> Iterator[None]:
    """Interrupt the main thread after ``seconds`` (the examples run on it)."""

    def expire(signum: int, frame: Any) -> None:
        raise _Timeout(f"{what} did not finish within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _where(example: Example) -> str:
    path = Path(example.path)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return f"{shown} line {example.line}"


def evaluate_python(example: Example) -> None:
    __tracebackhide__ = True
    state: _DocumentState = example.namespace[_STATE]
    source = str(example.parsed).replace(DOC_ADDRESS, f"127.0.0.1:{state.port}")
    stop_after_output, state.stop_after_output = state.stop_after_output, False
    if _TEST_MODULE.search(source):
        _run_test_module(example, source)
        return
    code = compile(
        pad(source, example.line + example.parsed.line_offset),
        example.path,
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,
    )
    namespace = example.namespace
    outputs = state.outputs
    printed_before = len(outputs)

    def recording_print(*args: Any, **kwargs: Any) -> None:
        print(*args, **kwargs)
        outputs.append(" ".join(map(str, args)))
        if stop_after_output:
            raise StopExample

    namespace["print"] = recording_print
    first_line = source.split("\n", 1)[0]
    program = first_line[2:] if re.fullmatch(r"# [\w-]+\.py", first_line) else "-"
    argv, sys.argv = sys.argv, [program]  # a program run without arguments
    try:
        with _bounded(BLOCK_TIMEOUT, f"the block at {_where(example)}"):
            if code.co_flags & inspect.CO_COROUTINE:
                awaitable = eval(code, namespace)

                async def run() -> None:
                    await awaitable

                anyio.run(run)
            else:
                exec(code, namespace)
    except StopExample:
        pass
    finally:
        sys.argv = argv
        namespace.pop("print", None)
        namespace.pop("__builtins__", None)
    if stop_after_output and len(outputs) == printed_before:
        raise AssertionError(f"the block at {_where(example)} ended without any output")


def _run_test_module(example: Example, source: str) -> None:
    """A block that is a pytest module: run it with pytest in a fresh folder."""
    __tracebackhide__ = True
    folder = Path(tempfile.mkdtemp(prefix="datafn-docs-tests-"))
    try:
        (folder / "pyproject.toml").write_text(PYTEST_CONFIG, encoding="utf-8")
        module = folder / f"test_{Path(example.path).stem}_line_{example.line}.py"
        module.write_text(source, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFN_")}
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rs", module.name],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=TEST_MODULE_TIMEOUT,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    output = result.stdout[-6000:] + result.stderr[-2000:]
    if result.returncode != 0 or not re.search(r"\b\d+ passed\b", result.stdout):
        raise AssertionError(f"the tests at {_where(example)} did not pass:\n{output}")


def evaluate_toml(example: Example) -> None:
    __tracebackhide__ = True
    text = str(example.parsed)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AssertionError(f"the TOML at {_where(example)} does not parse: {exc}") from None
    if "datafn" not in data.get("tool", {}):
        return
    from datafn.runtime import Runtime

    folder = Path(tempfile.mkdtemp(prefix="datafn-docs-toml-"))
    modules = set(sys.modules)
    try:
        (folder / "schema.json").write_text(json.dumps(tutorial_schema()), encoding="utf-8")
        for name, content in named_files(example.document.text).items():
            (folder / name).write_text(content, encoding="utf-8")
        (folder / "pyproject.toml").write_text(text, encoding="utf-8")
        Runtime.boot(use_env=False, pyproject=folder / "pyproject.toml")
    finally:
        # modules a setting imported from the folder (guard rules) go with it
        for name in set(sys.modules) - modules:
            if str(folder) in str(getattr(sys.modules[name], "__file__", "") or ""):
                del sys.modules[name]
        while str(folder) in sys.path:
            sys.path.remove(str(folder))
        shutil.rmtree(folder, ignore_errors=True)


def named_files(markdown: str) -> dict[str, str]:
    """The ```python blocks of a page whose first line names their file (``# policies.py``)."""
    files: dict[str, str] = {}
    for match in re.finditer(r"^```python\n# ([\w-]+\.py)\n(.*?)^```", markdown, re.M | re.S):
        files[match.group(1)] = match.group(2)
    return files


class RunsUntilStoppedParser:
    """``<!-- runs-until-stopped: why -->``: the next block is stopped after its first output."""

    def __init__(self) -> None:
        self.lexer = DirectiveInHTMLCommentLexer(directive="runs-until-stopped")

    def __call__(self, document: Document) -> Iterable[Region]:
        for lexed in self.lexer(document):
            following = document.text[lexed.end :].removeprefix("-->").lstrip()
            if not following.startswith("```python"):
                continue  # a ```sh block's marker is for tests/docs/test_tutorial.py
            yield Region(lexed.start, lexed.end, lexed.lexemes.get("arguments"), self.evaluate)

    @staticmethod
    def evaluate(example: Example) -> None:
        example.namespace[_STATE].stop_after_output = True


def _sybil(path: Path, patterns: list[str], excludes: list[str] = []) -> Sybil:  # noqa: B006
    return Sybil(
        parsers=[
            SkipParser(),
            RunsUntilStoppedParser(),
            CodeBlockParser(language="python", evaluator=evaluate_python),
            CodeBlockParser(language="toml", evaluator=evaluate_toml),
        ],
        path=str(path),
        patterns=patterns,
        excludes=excludes,
        setup=setup,
        teardown=teardown,
    )


#: README.md at the top only (not the READMEs of contrib/ and plugins/), and every page of
#: docs/ at any depth (Path.match matches a relative pattern from the right)
SYBILS = (_sybil(ROOT, ["README.md"], excludes=["*/*"]), _sybil(DOCS, ["*.md"]))


#: the ``pytest_collect_file`` hook of the root conftest.py
pytest_collect_file = pytest_integration(*SYBILS)
