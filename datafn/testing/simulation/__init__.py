"""A deterministic simulator of N datafn clients and one server, under faults.

::

    from datafn.testing.simulation import SimulationOptions, simulate, shrink

    result = simulate(42, SimulationOptions(faults=("drop", "reset", "crash")))
    if not result.ok:
        print(shrink(result).report())

From a seed, the simulator builds a random configuration (clients, faults, batch sizes) and a
workload of steps (local writes, explicit sync calls, ``start``/``stop``, offline periods,
crashes and restarts, armed network faults), runs it against the real client engine and the
real server application on virtual time, settles (faults off, every client online, sync rounds
until quiet) and checks the invariants of :data:`INVARIANTS`. The same seed and options give
the same run; :func:`shrink` removes steps while the same invariant still fails, down to a
short trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from datafn.testing.simulation.clock import SimulationDeadlock, VirtualTimeLoop
from datafn.testing.simulation.model import (
    ALL_FAULTS,
    INVARIANTS,
    SCHEMA,
    SimulationOptions,
    SimulationResult,
    Step,
    SwarmConfig,
    TraceLine,
    Violation,
)
from datafn.testing.simulation.runner import run_simulation
from datafn.testing.simulation.workload import describe_step, generate_steps

__all__ = [
    "ALL_FAULTS",
    "INVARIANTS",
    "SCHEMA",
    "SeedsReport",
    "SimulationDeadlock",
    "SimulationOptions",
    "SimulationResult",
    "Step",
    "SwarmConfig",
    "TraceLine",
    "Violation",
    "VirtualTimeLoop",
    "describe_step",
    "generate_steps",
    "run_seeds",
    "shrink",
    "simulate",
]


def simulate(
    seed: int, options: SimulationOptions | None = None, *, steps: Sequence[Step] | None = None
) -> SimulationResult:
    """Run seed ``seed``: a deterministic function of ``(seed, options)``, and of ``steps``
    when given (a shrunk workload replays its steps instead of generating them)."""
    return run_simulation(seed, options or SimulationOptions(), steps)


def shrink(
    result: SimulationResult,
    *,
    invariant: str | None = None,
    predicate: Callable[[SimulationResult], bool] | None = None,
    max_runs: int = 400,
    on_run: Callable[[SimulationResult], None] | None = None,
) -> SimulationResult:
    """A shorter failing run: steps (chunks, then single steps) are removed while the run
    still violates ``invariant`` (default: the first one ``result`` violated), or while
    ``predicate(run)`` holds when given (to keep one particular failure).

    Returns the smallest failing run found (``result`` itself when nothing could go).
    """
    if result.ok:
        return result
    target = invariant or result.violations[0].invariant
    keep = predicate or (lambda run: target in run.invariants)
    best = result
    runs = 0

    def fails(steps: list[Step]) -> SimulationResult | None:
        nonlocal runs
        runs += 1
        candidate = simulate(result.seed, result.options, steps=steps)
        if on_run is not None:
            on_run(candidate)
        return candidate if keep(candidate) else None

    chunk = max(1, len(best.steps) // 2)
    while chunk >= 1 and runs < max_runs:
        start = 0
        changed = False
        while start < len(best.steps) and runs < max_runs:
            steps = best.steps[:start] + best.steps[start + chunk :]
            found = fails(steps) if steps != best.steps else None
            if found is not None:
                best = found
                changed = True
            else:
                start += chunk
        if not changed:
            chunk //= 2
    # simpler steps: no waiting after them
    for index in range(len(best.steps)):
        if runs >= max_runs:
            break
        step = best.steps[index]
        if step.after > 0:
            quicker = Step(step.kind, step.client, step.seed, 0.0, step.args)
            found = fails([*best.steps[:index], quicker, *best.steps[index + 1 :]])
            if found is not None:
                best = found
    return best


@dataclass
class SeedsReport:
    """What :func:`run_seeds` found: every failing result, and counts."""

    seeds: int = 0
    failures: list[SimulationResult] = field(default_factory=list)
    by_invariant: dict[str, int] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        if self.ok:
            conflicts = sum(v for k, v in self.stats.items() if k.startswith("conflicts_"))
            rejected = int(self.stats.get("conflicts_rejected", 0))
            return (
                f"{self.seeds} seeds: ok ({int(self.stats.get('writes', 0))} writes, "
                f"{int(self.stats.get('faults', 0))} faults, "
                f"{int(self.stats.get('client_crashes', 0))} client crashes"
                + (f", {int(conflicts)} conflict events" if conflicts else "")
                + (
                    f", {rejected} writes refused for a conflict and kept as dead letters"
                    if rejected
                    else ""
                )
                + ")"
            )
        found = ", ".join(f"{name} {count}" for name, count in sorted(self.by_invariant.items()))
        seeds = ", ".join(str(r.seed) for r in self.failures[:10])
        more = "…" if len(self.failures) > 10 else ""
        return f"{self.seeds} seeds: {len(self.failures)} failed ({found}); seeds {seeds}{more}"

    def assert_ok(self, *, shrunk: bool = True) -> None:
        """Raise AssertionError with the first failure's report (shrunk) when any seed failed."""
        if self.ok:
            return
        first = self.failures[0]
        if shrunk:
            first = shrink(first)
        raise AssertionError(f"{self.summary()}\n\n{first.report()}")


def run_seeds(
    seeds: Iterable[int],
    options: SimulationOptions | None = None,
    *,
    stop_after: int | None = None,
    on_result: Callable[[SimulationResult], None] | None = None,
) -> SeedsReport:
    """Run every seed; ``stop_after`` failures end the run early."""
    options = options or SimulationOptions()
    report = SeedsReport()
    for result in _each(seeds, options):
        report.seeds += 1
        for key, value in result.stats.items():
            if key.startswith("max_"):  # a maximum over the seeds, not a sum
                report.stats[key] = max(report.stats.get(key, 0), value)
            else:
                report.stats[key] = report.stats.get(key, 0) + value
        if on_result is not None:
            on_result(result)
        if not result.ok:
            report.failures.append(result)
            for name in result.invariants:
                report.by_invariant[name] = report.by_invariant.get(name, 0) + 1
            if stop_after is not None and len(report.failures) >= stop_after:
                break
    return report


def _each(seeds: Iterable[int], options: SimulationOptions) -> Iterator[SimulationResult]:
    for seed in seeds:
        yield simulate(seed, options)
