"""Every task of the project: nox -s tests, lint, types, docs, bench, demo, simulate."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "types", "tests"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
#: The distributions of this repository, installed editable into every session.
PACKAGES = [".[test]", "./contrib/datafn-sqlmodel", "./plugins/datafn-plugin-template"]
PACKAGES += [
    f"./{path.parent.relative_to(ROOT)}"
    for path in sorted(ROOT.glob("contrib/*/pyproject.toml"))
    + sorted(ROOT.glob("plugins/*/pyproject.toml"))
    if f"./{path.parent.relative_to(ROOT)}" not in PACKAGES
]
#: the audit's optional OpenTelemetry and Prometheus integrations are tested too
PACKAGES += ["./contrib/datafn-audit[test]"]
KERNEL = ["datafn"]


def install(session: nox.Session, *extra: str) -> None:
    args: list[str] = []
    for package in PACKAGES:
        args += ["-e", package]
    session.install(*args, *extra)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (kernel, contrib and plugin distributions)."""
    install(session)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def types(session: nox.Session) -> None:
    """mypy --strict on the kernel."""
    install(session, "mypy")
    session.run("mypy", "--strict", *KERNEL)


#: The documentation site: MkDocs with the Material theme, API pages by mkdocstrings (ruff
#: formats the signatures).
DOCS = [
    "mkdocs>=1.6",
    "mkdocs-material>=9.5",
    "mkdocstrings[python]>=0.29",
    "mkdocs-autorefs>=1.4",  # optional cross-references (docs/markdown_roles.py)
    "ruff",
]


@nox.session
def docs(session: nox.Session) -> None:
    """Check the hook reference against the specifications, then build the site into site/
    with every warning an error (mkdocs build --strict)."""
    install(session, *DOCS)
    session.run("python", "docs/generate_hook_reference.py", "--check")
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def bench(session: nox.Session) -> None:
    """Every benchmark in bench/ (prints figures; asserts nothing about speed)."""
    install(session, "psutil")
    for script in sorted(ROOT.glob("bench/bench_*.py")):
        session.run("python", str(script.relative_to(ROOT)), *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job on the embedded default: a server and two clients on SQLite."""
    install(session)
    session.run("datafn", "demo")


@nox.session
def simulate(session: nox.Session) -> None:
    """The deterministic fault simulator on 10 000 seeds (``nox -s simulate -- --start N``)."""
    install(session)
    session.run("datafn", "simulate", "--seeds", "10000", "--keep-going", *session.posargs)
