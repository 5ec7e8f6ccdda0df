"""The simulator under the conflict policies: under ``reject`` no write is lost (a write
refused for a conflict is a dead letter of its client, counted, never dropped)."""

from __future__ import annotations

from typing import Any

import pytest

from datafn.builtins import client_phases
from datafn.testing.simulation import SimulationOptions, run_seeds


def test_under_reject_no_write_is_lost_and_refusals_are_counted() -> None:
    report = run_seeds(range(40), SimulationOptions(conflicts="reject"))
    report.assert_ok()
    assert report.stats.get("conflicts_rejected", 0) > 0
    assert "kept as dead letters" in report.summary()


def test_last_writer_wins_reports_conflicts_on_both_sides() -> None:
    report = run_seeds(range(40), SimulationOptions())
    report.assert_ok()
    assert report.stats.get("conflicts_overwrote", 0) > 0
    assert report.stats.get("conflicts_overwritten", 0) > 0
    assert report.stats.get("conflicts_rejected", 0) == 0


def test_a_client_that_drops_conflicting_writes_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def drop(engine: Any, report: Any, entry: Any, error: Any) -> None:
        await engine.store.reject([entry.seq])  # taken out, but not kept as a dead letter
        await engine.write_event("mutation_rejected", entry, error=error)

    monkeypatch.setattr(client_phases, "_dead_letter", drop)
    report = run_seeds(range(40), SimulationOptions(conflicts="reject"), stop_after=1)
    assert not report.ok and "conflict-dropped" in report.by_invariant


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown conflict policy"):
        SimulationOptions(conflicts="first-writer-wins")
