"""``datafn simulate``, the deterministic fault simulator on the command line (added by the
``simulation-cli`` plugin, :mod:`datafn.builtins.simulation_cli`).

::

    datafn simulate --seeds 1000                  # seeds 0..999, a progress bar, one summary
    datafn simulate --seeds 200 --faults drop,reset,crash --clients 3
    datafn simulate --seed 4711                   # replay one seed; print its shrunk trace

The exit code is 1 when a seed violated an invariant; the first failing seed is replayed,
shrunk and printed step by step (see docs/simulation.md).
"""

from __future__ import annotations

import logging
import sys
import time

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["simulate"]


def _faults(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    from datafn.testing.simulation import ALL_FAULTS

    names = tuple(part.strip() for part in value.split(",") if part.strip())
    if names == ("none",):
        return ()
    if names == ("all",):
        return ALL_FAULTS
    unknown = [n for n in names if n not in ALL_FAULTS]
    if unknown:
        raise click.BadParameter(
            f"unknown fault(s) {', '.join(unknown)}; choose from {', '.join(ALL_FAULTS)}, "
            "or all, or none",
            param_hint="--faults",
        )
    return names


@click.command()
@click.option(
    "--seeds", type=click.IntRange(1), default=100, show_default=True, help="How many seeds to run."
)
@click.option("--start", type=int, default=0, show_default=True, help="The first seed.")
@click.option(
    "--seed",
    "one_seed",
    type=int,
    default=None,
    help="Replay this one seed and print its (shrunk) trace.",
)
@click.option(
    "--clients",
    type=click.IntRange(1, 16),
    default=None,
    help="Clients per run (default: 2 to 4, chosen by each seed).",
)
@click.option(
    "--steps",
    type=click.IntRange(1, 10_000),
    default=30,
    show_default=True,
    help="Workload steps per seed.",
)
@click.option(
    "--faults",
    default=None,
    metavar="LIST",
    help="Faults that may be injected, comma-separated: drop, reset, duplicate, "
    "replay, delay, truncate, crash, server-crash, offline (default: all).",
)
@click.option(
    "--conflicts",
    type=click.Choice(["last-writer-wins", "reject"]),
    default="last-writer-wins",
    show_default=True,
    help="The server's conflict policy for every resource.",
)
@click.option("--no-shrink", is_flag=True, help="Print the failing trace as it is.")
@click.option(
    "--keep-going",
    is_flag=True,
    help="Run every seed even after a failure (default: stop at the first).",
)
def simulate(
    seeds: int,
    start: int,
    one_seed: int | None,
    clients: int | None,
    steps: int,
    faults: str | None,
    conflicts: str,
    no_shrink: bool,
    keep_going: bool,
) -> None:
    """Run the deterministic fault simulator: N clients and a server on virtual time, random
    workloads and faults from each seed, invariants checked after settling."""
    from datafn.testing.simulation import SimulationOptions, run_seeds, shrink, simulate

    # the engine logs what it does about the faults (dead letters, retries): expected here
    logging.getLogger("datafn").setLevel(logging.ERROR)
    chosen = _faults(faults)
    options = SimulationOptions(clients=clients, steps=steps, conflicts=conflicts)
    if chosen is not None:
        options = SimulationOptions(
            clients=clients, steps=steps, faults=chosen, conflicts=conflicts
        )
    console = Console(stderr=True)
    out = Console(highlight=False, soft_wrap=True)
    if one_seed is not None:
        result = simulate(one_seed, options)
        if result.ok:
            out.print(f"seed {one_seed} ({options.describe()}): ok")
            out.print(result.format_trace(), markup=False)
            return
        if not no_shrink:
            with console.status(f"seed {one_seed} failed; shrinking…"):
                result = shrink(result)
        out.print(result.report(), markup=False)
        sys.exit(1)
    started = time.perf_counter()
    with Progress(
        TextColumn("simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("seeds", total=seeds, failed=0)
        failed = 0

        def advance(result: object) -> None:
            nonlocal failed
            if not getattr(result, "ok", True):
                failed += 1
            progress.update(task, advance=1, failed=failed)

        report = run_seeds(
            range(start, start + seeds),
            options,
            stop_after=None if keep_going else 1,
            on_result=advance,
        )
    elapsed = time.perf_counter() - started
    out.print(f"{report.summary()} in {elapsed:.1f} s")
    if report.ok:
        return
    first = report.failures[0]
    if not no_shrink:
        with console.status(f"seed {first.seed} failed; shrinking…"):
            first = shrink(first)
    out.print(
        f"\nfirst failing seed: {first.seed} (replay: datafn simulate --seed {first.seed}"
        + (f" --clients {clients}" if clients is not None else "")
        + (f" --steps {steps}" if steps != 30 else "")
        + (f" --faults {','.join(chosen) or 'none'}" if chosen is not None else "")
        + ")",
        markup=False,
    )
    out.print(first.report(), markup=False)
    sys.exit(1)
