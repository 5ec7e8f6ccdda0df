"""The fixed seed sweep the CI runs: 500 seeds of the deterministic fault simulator.

Each seed builds its own configuration (2–4 clients, a random mix of every fault, batch
sizes) and a workload of 30 steps; the whole sweep takes a minute or two of wall time
(virtual time costs nothing). A failure prints the seed and its shrunk trace; replay it with
``datafn simulate --seed N``.
"""

from __future__ import annotations

import pytest

from datafn.testing.simulation import SimulationOptions, run_seeds

pytestmark = pytest.mark.simulation

SEEDS = 500
CHUNK = 50


@pytest.mark.parametrize(
    "first", range(0, SEEDS, CHUNK), ids=lambda s: f"seeds-{s}-{s + CHUNK - 1}"
)
def test_seed_sweep(first: int) -> None:
    report = run_seeds(range(first, first + CHUNK), SimulationOptions(), stop_after=1)
    report.assert_ok()
