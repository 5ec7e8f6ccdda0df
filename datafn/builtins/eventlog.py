"""Built-in plugin: log every client event on the ``datafn.events`` logger (DEBUG level)."""

from __future__ import annotations

import logging

from datafn.events import Event
from datafn.plugin import hookimpl

log = logging.getLogger("datafn.events")


@hookimpl(trylast=True)
def datafn_on_event(event: Event) -> None:
    if log.isEnabledFor(logging.DEBUG):
        ctx = event.context
        log.debug(
            "%s phase=%s resources=%s attempt=%s error=%s",
            event.name,
            ctx.phase,
            ",".join(ctx.resources),
            ctx.attempt,
            ctx.error,
        )
