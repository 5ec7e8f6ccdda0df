"""Built-in plugin: ``datafn simulate``, the deterministic fault simulator on the command line.

::

    datafn simulate --seeds 1000                  # seeds 0..999, a progress bar, one summary
    datafn simulate --seeds 200 --faults drop,reset,crash --clients 3
    datafn simulate --seed 4711                   # replay one seed; print its shrunk trace

The exit code is 1 when a seed violated an invariant; the first failing seed is replayed,
shrunk and printed step by step (see docs/simulation.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from datafn.plugin import hookimpl

if TYPE_CHECKING:
    import click


@hookimpl
def datafn_add_commands(cli: click.Group) -> None:
    # the command (click, rich) is imported when the command line starts, not by every client
    from datafn.builtins.simulation_commands import simulate

    cli.add_command(simulate)
