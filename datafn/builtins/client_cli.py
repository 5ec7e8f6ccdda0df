"""Built-in plugin: the client's commands, ``datafn demo`` and ``datafn sync``.

The commands live in :mod:`datafn.builtins.client_commands`, imported (with click and rich) only
when the ``datafn`` command line starts, not by every client that loads this plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from datafn.plugin import hookimpl

if TYPE_CHECKING:
    import click


@hookimpl
def datafn_add_commands(cli: click.Group) -> None:
    from datafn.builtins.client_commands import demo, sync

    cli.add_command(demo)
    cli.add_command(sync)
