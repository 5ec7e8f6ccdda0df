"""The simulator itself: replay, shrinking, catching a broken engine, the CLI, the fixture."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from datafn.builtins.client_memory_store import MemoryClientStore
from datafn.client.store import ClientStore
from datafn.plugin import hookimpl
from datafn.schema import Schema
from datafn.testing.simulation import (
    SeedsReport,
    SimulationOptions,
    Step,
    VirtualTimeLoop,
    generate_steps,
    run_seeds,
    shrink,
    simulate,
)


class FreshMutationIds:
    """A deliberately broken idempotency: every push sends fresh mutation ids."""

    @hookimpl
    def datafn_before_sync(self, phase: str, payload: Any, context: Any) -> Any:
        if phase != "push":
            return None
        return {
            **payload,
            "mutations": [{**m, "mutationId": str(uuid.uuid4())} for m in payload["mutations"]],
        }


def test_virtual_time_costs_no_wall_time() -> None:
    import asyncio
    import time

    async def main() -> float:
        with anyio.move_on_after(3600):
            await anyio.sleep(7200)
        return asyncio.get_running_loop().time()

    started = time.perf_counter()
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        assert runner.run(main()) == 3600
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize("seed", [3, 17, 2024])
def test_a_seed_replays_identically(seed: int) -> None:
    first = simulate(seed)
    second = simulate(seed)
    assert first.steps == second.steps
    assert first.fingerprint() == second.fingerprint()
    assert [str(v) for v in first.violations] == [str(v) for v in second.violations]
    assert first.stats["requests"] == second.stats["requests"] > 0
    # and the steps alone replay it too
    third = simulate(seed, steps=first.steps)
    assert third.fingerprint() == first.fingerprint()


def test_the_workload_is_a_function_of_the_seed() -> None:
    options = SimulationOptions()
    one = simulate(5).config
    assert generate_steps(5, options, one) == generate_steps(5, options, one)
    assert generate_steps(5, options, one) != generate_steps(6, options, one)
    assert len(generate_steps(5, SimulationOptions(steps=7), one)) == 7


def test_broken_idempotency_is_caught_as_applied_twice() -> None:
    report = run_seeds(range(5), SimulationOptions(plugins=[FreshMutationIds()]), stop_after=1)
    assert not report.ok
    failure = report.failures[0]
    assert "applied-twice" in failure.invariants, failure.report()
    assert any("is in the server's change log" in v.message for v in failure.violations)


def test_shrinking_gives_a_shorter_trace_that_still_fails() -> None:
    options = SimulationOptions(plugins=[FreshMutationIds()], steps=25)
    result = next(r for r in (simulate(s, options) for s in range(10)) if not r.ok)
    target = result.violations[0].invariant
    small = shrink(result)
    assert len(small.steps) < len(result.steps)
    assert target in small.invariants
    assert set(small.steps) <= set(result.steps)
    again = simulate(small.seed, options, steps=small.steps)
    assert target in again.invariants
    report = small.report()
    assert f"seed {result.seed}" in report and "step 1:" in report


def test_a_passing_run_checks_something() -> None:
    result = simulate(11, SimulationOptions(faults=(), steps=20))
    assert result.stats["requests"] > 0
    assert result.stats["virtual_seconds"] > 0
    assert any(line.is_step for line in result.trace)


def test_unknown_faults_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown faults"):
        SimulationOptions(faults=("meteor",))


def test_fixture_runs_user_plugins_and_stores(
    datafn_simulation: Callable[..., SeedsReport],
) -> None:
    phases: list[str] = []
    server_actions: list[str] = []
    stores: list[int] = []

    class Policy:
        @hookimpl
        def datafn_before_sync(self, phase: str, payload: Any, context: Any) -> None:
            phases.append(phase)

    class ServerObserver:
        @hookimpl
        def datafn_after_sync(self, phase: str, payload: Any, result: Any, context: Any) -> None:
            if context.side == "server":
                server_actions.append(phase)

    def store_factory(index: int, schema: Schema) -> ClientStore:
        stores.append(index)
        return MemoryClientStore("memory://", schema)

    report = datafn_simulation(
        seeds=range(3),
        plugins=[Policy()],
        server_plugins=[ServerObserver()],
        store_factory=store_factory,
        clients=2,
        steps=15,
        stop_after=None,
    )
    assert report.seeds == 3
    assert stores == [1, 2] * 3  # one durable store per client, reopened by restarts
    assert "push" in phases and "pull" in phases
    assert "push" in server_actions


def test_fixture_reports_a_failure(datafn_simulation: Callable[..., SeedsReport]) -> None:
    report = datafn_simulation(seeds=range(5), plugins=[FreshMutationIds()], steps=10)
    with pytest.raises(AssertionError, match=r"violation \[(applied-twice|stuck)\]"):
        report.assert_ok()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datafn", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_runs_seeds_and_agrees_with_the_api() -> None:
    options = SimulationOptions(clients=2, steps=8, faults=("drop", "reset"))
    expected = run_seeds(range(4), options, stop_after=1)
    done = _cli("--seeds", "4", "--clients", "2", "--steps", "8", "--faults", "drop,reset")
    if expected.ok:
        assert done.returncode == 0, done.stderr
        assert "4 seeds: ok" in done.stdout
    else:
        assert done.returncode == 1
        seed = expected.failures[0].seed
        assert f"first failing seed: {seed}" in done.stdout
        assert "step 1:" in done.stdout


def test_cli_replays_one_seed() -> None:
    result = simulate(7, SimulationOptions(steps=6))
    done = _cli("--seed", "7", "--steps", "6")
    assert done.returncode == (0 if result.ok else 1), done.stderr
    assert "seed 7" in done.stdout
    assert "step 1:" in done.stdout


def test_cli_refuses_unknown_faults() -> None:
    done = _cli("--seeds", "1", "--faults", "drop,meteor")
    assert done.returncode != 0
    assert "meteor" in done.stderr


def test_steps_are_readable() -> None:
    step = Step("fault", 2, 1, 0.0, (("fault", "reset"), ("endpoint", "push")))
    from datafn.testing.simulation import describe_step

    assert describe_step(step) == (
        "the network will reset the connection after the server answers client 2's next push "
        "request"
    )
