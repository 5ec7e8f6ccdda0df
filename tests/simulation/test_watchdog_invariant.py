"""The watchdog in simulated time: during a server outage the started clients report
``sync_stuck``, and every episode ends with ``sync_recovered`` once the outage is over (the
``unrecovered`` invariant), with the recovery time measured in virtual seconds."""

from __future__ import annotations

import math
from typing import Any

import anyio

from datafn.errors import Veto
from datafn.plugin import hookimpl
from datafn.testing.simulation import SimulationOptions, run_seeds

#: Thresholds small enough for the simulator's short runs (a few virtual seconds of workload).
FAST_WATCHDOG = {
    "watchdog": {
        "push_after": 1.0,
        "pull_after": 1.0,
        "announce_after": 1.0,
        "queue_after": 2.0,
        "check_interval": 0.5,
    }
}


class Outage:
    """A server policy refusing every push as overloaded (503) until ``until`` virtual
    seconds: the clients stay online, their pushes keep failing."""

    def __init__(self, until: float) -> None:
        self.until = until

    @hookimpl
    def datafn_before_sync(self, phase: str, payload: Any, context: Any) -> None:
        if phase == "push" and anyio.current_time() < self.until:
            raise Veto("the simulated server is overloaded", code="SERVICE_UNAVAILABLE")


def test_every_stuck_episode_recovers_after_an_outage() -> None:
    options = SimulationOptions(sync=FAST_WATCHDOG, server_plugins=[Outage(4.0)])
    report = run_seeds(range(30), options, stop_after=1)
    report.assert_ok()
    assert report.stats["stuck_episodes"] > 0
    assert 0 < report.stats["max_recovery_seconds"] < 60


def test_an_episode_that_never_ends_breaks_the_invariant() -> None:
    options = SimulationOptions(sync=FAST_WATCHDOG, server_plugins=[Outage(math.inf)])
    report = run_seeds(range(15), options)
    # every seed fails to settle; those with a started client also have an unended episode
    assert report.by_invariant.get("stuck") == 15
    assert report.by_invariant.get("unrecovered", 0) > 0
