"""Start-up benchmark: the cost of ``import datafn`` and of opening a client, for command-line
tools and desktop apps that start often and sync rarely.

Run: ``python bench/bench_startup.py`` (``--runs 15`` by default). Every figure is the median
over ``--runs`` fresh interpreter processes (one more run of each kind first warms the
file-system cache and is not counted), as wall-clock time and as CPU time (user + system; on a
busy machine the CPU time is the steadier figure):

* bare interpreter: ``python -c pass``;
* ``import datafn``, and the same minus the bare interpreter;
* ``from datafn import Client`` minus the bare interpreter: what an application using the
  client imports before it opens one;
* client open + close: ``async with datafn.Client(schema=..., remote="http://127.0.0.1:1/x",
  store="sqlite:///existing.db")`` on an existing SQLite file, without syncing (the remote is
  never contacted), timed inside the child process right after ``import datafn``: so it
  includes every import the client needs (pydantic, the plugins' modules), as an application
  would see it;
* the child's ``import datafn`` plus that first open + close: comparable across versions
  whatever ``import datafn`` itself imports;
* a second open + close in the same process: the open itself, every module already imported;
* the whole child process of that open + close (interpreter, imports, open, close, exit).

The client runs with the plugins of the environment as installed (a development environment
has many) and with ``DATAFN_PLUGINS=sqlmodel-client`` (built-ins and the SQLite store only), as
an application would pin them. Figures only; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCHEMA: dict[str, Any] = {
    "resources": [
        {
            "name": "items",
            "fields": [
                {"name": "title", "type": "string", "required": True},
                {"name": "done", "type": "boolean", "default": False},
            ],
        }
    ]
}

#: The child that opens and closes a client twice; prints (wall, CPU) seconds of each phase.
OPEN_CLOSE = """
import json, sys, time
clock = lambda: (time.perf_counter(), time.process_time())
marks = [clock()]
import anyio
import datafn
marks.append(clock())

async def main():
    async with datafn.Client(schema=json.loads(sys.argv[1]), remote="http://127.0.0.1:1/x",
                             store=sys.argv[2]):
        pass

anyio.run(main)
marks.append(clock())
anyio.run(main)
marks.append(clock())
print(json.dumps([[b[0] - a[0], b[1] - a[1]] for a, b in zip(marks, marks[1:])]))
"""

Figure = tuple[float, float]  # wall, CPU seconds


def child_env(plugins: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFN_")}
    if plugins is not None:
        env["DATAFN_PLUGINS"] = plugins
    return env


def run(args: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[Figure, str]:
    """One child process: its (wall, CPU) seconds and its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=120
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return (wall, cpu), out.stdout


def median(figures: list[Figure]) -> Figure:
    return statistics.median(f[0] for f in figures), statistics.median(f[1] for f in figures)


def median_process(args: list[str], runs: int, *, cwd: Path, env: dict[str, str]) -> Figure:
    run(args, cwd=cwd, env=env)  # warm-up
    return median([run(args, cwd=cwd, env=env)[0] for _ in range(runs)])


def open_close(runs: int, *, cwd: Path, store: str, plugins: str | None) -> list[Figure]:
    """Medians of: the imports, the first open + close, the second, the whole process, and
    the imports plus the first open + close."""
    args = [sys.executable, "-c", OPEN_CLOSE, json.dumps(SCHEMA), store]
    env = child_env(plugins)
    run(args, cwd=cwd, env=env)  # warm-up (and, the first time, creates the tables)
    phases: list[list[Figure]] = [[], [], [], [], []]
    for _ in range(runs):
        total, out = run(args, cwd=cwd, env=env)
        imports, first, second = [(wall, cpu) for wall, cpu in json.loads(out)]
        phases[0].append(imports)
        phases[1].append(first)
        phases[2].append(second)
        phases[3].append(total)
        phases[4].append((imports[0] + first[0], imports[1] + first[1]))
    return [median(p) for p in phases]


def minus(a: Figure, b: Figure) -> Figure:
    return a[0] - b[0], a[1] - b[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="processes per figure (median)")
    options = parser.parse_args()
    runs = max(1, options.runs)
    with tempfile.TemporaryDirectory() as tmp:
        # an empty folder: no pyproject.toml of this repository is picked up
        folder = Path(tmp)
        env = child_env(None)
        python = sys.executable
        bare = median_process([python, "-c", "pass"], runs, cwd=folder, env=env)
        imported = median_process([python, "-c", "import datafn"], runs, cwd=folder, env=env)
        client = median_process(
            [python, "-c", "from datafn import Client"], runs, cwd=folder, env=env
        )
        store = f"sqlite:///{folder / 'existing.db'}"
        rows = [
            ("bare interpreter (python -c pass)", bare),
            ("import datafn", imported),
            ("import datafn - bare", minus(imported, bare)),
            ("from datafn import Client - bare", minus(client, bare)),
        ]
        for label, plugins in (
            ("installed plugins", None),
            ("DATAFN_PLUGINS=sqlmodel-client", "sqlmodel-client"),
        ):
            _imports, first, second, total, imported_first = open_close(
                runs, cwd=folder, store=store, plugins=plugins
            )
            rows += [
                (f"client open + close, {label}", first),
                ("  import datafn + that open + close", imported_first),
                ("  the same again in that process", second),
                ("  the whole process", total),
            ]
    print(f"start-up, median of {runs} fresh processes ({python}; load {os.getloadavg()[0]:.1f})")
    width = max(len(label) for label, _ in rows)
    print(f"  {'':<{width}}  {'wall':>8}     {'CPU':>8}")
    for label, (wall, cpu) in rows:
        print(f"  {label:<{width}}  {wall * 1000:8.1f} ms  {cpu * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
