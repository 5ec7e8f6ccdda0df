"""Opt-in pytest plugin for datafn plugin authors.

Enable it with ``-p datafn.testing.pytest_plugin`` (``addopts`` in your pytest
configuration) or ``pytest_plugins = ["datafn.testing.pytest_plugin"]`` in your top-level
``conftest.py``. It is never loaded by merely installing datafn. Fixtures:

``datafn_project``
    A :class:`~datafn.testing.project.DatafnProject` in a fresh temporary folder that is the
    working directory for the test, with every ``DATAFN_*`` variable removed.
    ``datafn_project.write(text, schema=..., settings=...)`` writes its ``pyproject.toml``;
    ``datafn_project.boot()`` boots a :class:`~datafn.Runtime` from it.

``hook_recorder``
    ``hook_recorder(*hook_names, tryfirst=False, trylast=False)`` makes a
    :class:`~datafn.testing.recorder.HookRecorder`: a plugin object to pass in
    ``plugins=[...]`` that records ``(hook, kwargs)`` of every call, in order.

``datafn_server``
    ``datafn_server(plugins=[...], **create_app_kwargs)`` starts a DataFn server, booted from
    the project's configuration, on a real socket in a background thread
    (:class:`~datafn.testing.live.LiveServer`: ``.remote``, ``.requests``); it is stopped after
    the test. The store is ``memory://`` unless the project sets ``[tool.datafn.server]
    database``.

``datafn_client``
    ``datafn_client(**client_kwargs)`` makes a :class:`datafn.Client` for the project,
    connected to the server started last (unless the project or the arguments name a
    ``remote``), with a ``memory://`` store unless the project sets one. Use it as
    ``async with datafn_client() as client:``.

``datafn_simulation``
    ``datafn_simulation(seeds=range(50), plugins=[...], server_plugins=[...],
    store_factory=..., **options)`` runs the deterministic fault simulator
    (:mod:`datafn.testing.simulation`) over the seeds with your plugins in every client
    (and ``server_plugins`` in the server), and returns a
    :class:`~datafn.testing.simulation.SeedsReport`; ``.assert_ok()`` fails the test with
    the first failing seed's shrunk trace. Options are those of
    :class:`~datafn.testing.simulation.SimulationOptions` (``clients``, ``steps``,
    ``faults``, ``sync``…).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from datafn.testing.live import LiveServer
from datafn.testing.project import DatafnProject
from datafn.testing.recorder import HookRecorder

if TYPE_CHECKING:
    from datafn.testing.simulation import SeedsReport

__all__ = [
    "datafn_client",
    "datafn_project",
    "datafn_server",
    "datafn_simulation",
    "hook_recorder",
]


@pytest.fixture
def datafn_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DatafnProject:
    """A throwaway project folder as the working directory, no ``DATAFN_*`` variables set."""
    for name in list(os.environ):
        if name.startswith("DATAFN_"):
            monkeypatch.delenv(name)
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return DatafnProject(folder)


@pytest.fixture
def hook_recorder() -> Callable[..., HookRecorder]:
    """``hook_recorder(*hooks, tryfirst=False, trylast=False)`` → a recording plugin."""
    return HookRecorder


class _Servers:
    def __init__(self, project: DatafnProject) -> None:
        self.project = project
        self.started: list[LiveServer] = []

    def __call__(self, *, plugins: list[object] | None = None, **kwargs: Any) -> LiveServer:
        from datafn.server import create_app

        if "runtime" not in kwargs:
            kwargs["runtime"] = self.project.boot(plugins=plugins)
        elif plugins:
            raise TypeError("pass plugins to the runtime you give")
        config = kwargs["runtime"].config
        if "store" not in kwargs and config.source_of("server.database") == "default":
            kwargs["store"] = "memory://"
        app = create_app(**kwargs)
        server = LiveServer(app, base_path=config.server.base_path).start()
        self.started.append(server)
        return server

    def stop(self) -> None:
        while self.started:
            self.started.pop().stop()


@pytest.fixture
def datafn_server(datafn_project: DatafnProject) -> Iterator[Callable[..., LiveServer]]:
    """``datafn_server(plugins=[...], **create_app_kwargs)`` → a started LiveServer."""
    servers = _Servers(datafn_project)
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def datafn_client(datafn_project: DatafnProject, datafn_server: _Servers) -> Callable[..., Any]:
    """``datafn_client(**kwargs)`` → a :class:`datafn.Client` (not yet entered)."""
    from datafn.client import Client
    from datafn.config import load_config

    def make(**kwargs: Any) -> Client:
        if not datafn_project.pyproject.exists():
            datafn_project.write()
        config = load_config(pyproject=datafn_project.pyproject, use_env=False)
        kwargs.setdefault("pyproject", datafn_project.pyproject)
        kwargs.setdefault("use_env", False)
        if "store" not in kwargs and config.source_of("store") == "default":
            kwargs["store"] = "memory://"
        if (
            "remote" not in kwargs
            and config.source_of("sync.remote") == "default"
            and datafn_server.started
        ):
            kwargs["remote"] = datafn_server.started[-1].remote
        return Client(**kwargs)

    return make


def _simulate(
    *,
    seeds: Iterable[int] = range(20),
    plugins: Iterable[object] = (),
    server_plugins: Iterable[object] = (),
    stop_after: int | None = 1,
    **options: Any,
) -> SeedsReport:
    from datafn.testing.simulation import SimulationOptions, run_seeds

    chosen = SimulationOptions(
        plugins=tuple(plugins), server_plugins=tuple(server_plugins), **options
    )
    return run_seeds(seeds, chosen, stop_after=stop_after)


@pytest.fixture
def datafn_simulation() -> Callable[..., SeedsReport]:
    """``datafn_simulation(seeds=range(50), plugins=[...], **options)`` → a SeedsReport."""
    return _simulate
