"""The reconnect schedule: min(base * multiplier ** attempt + random() * jitter, max_delay)."""

from __future__ import annotations

import random as _random
from collections.abc import Callable

from datafn.config import WsReconnectSettings

__all__ = ["ReconnectSchedule"]


class ReconnectSchedule:
    """Delays between reconnect attempts; ``reset()`` after a successful open.

    ``random`` is injectable so tests can check the schedule exactly.
    """

    def __init__(
        self,
        settings: WsReconnectSettings,
        *,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.settings = settings
        self._random = random
        self.attempt = 0

    def delay(self, attempt: int) -> float:
        s = self.settings
        # cap the exponent so a long outage cannot overflow the float before min() applies
        growth = s.multiplier ** min(attempt, 64)
        return min(s.base_delay * growth + self._random() * s.jitter, s.max_delay)

    def next_delay(self) -> float:
        """The delay before the next attempt; advances the attempt counter."""
        value = self.delay(self.attempt)
        self.attempt += 1
        return value

    def reset(self) -> None:
        self.attempt = 0
