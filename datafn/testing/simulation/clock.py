"""An asyncio event loop whose clock is virtual: when nothing is ready, time jumps to the next
timer instead of sleeping.

Every ``anyio.sleep``, ``fail_after``, debounce and retry backoff of the real engine then costs
no wall time, and the order in which callbacks run depends only on the program: a run is a
deterministic function of its inputs. There is no real I/O in a simulation, so the selector
never waits; when no callback is ready and no timer is due, every task waits for something
that can never happen, and the loop raises :class:`SimulationDeadlock`.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

__all__ = ["SimulationDeadlock", "VirtualTimeLoop"]


class SimulationDeadlock(RuntimeError):
    """Every task waits, and no timer will ever wake one of them."""


class _VirtualSelector(selectors.SelectSelector):
    """Never waits: a timeout advances the loop's virtual clock by that much."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise SimulationDeadlock("every task waits and no timer is due")
        if timeout > 0:
            self.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop on virtual time; ``loop.time()`` starts at 0.0 seconds."""

    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (timers due by then run on the next iteration)."""
        self._virtual.now += max(0.0, seconds)

    def _write_to_self(self) -> None:  # no other thread ever wakes this loop
        return None

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> Any:  # type: ignore[override]
        raise RuntimeError(
            "a thread was asked for inside a simulation (run_in_executor / to_thread): "
            "threads make the run nondeterministic; use stores that do not need them"
        )
