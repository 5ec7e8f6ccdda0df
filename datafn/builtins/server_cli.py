"""Built-in plugin ``server-cli``: adds ``datafn serve`` and ``datafn compact`` to the
command line.

The command lives in :mod:`datafn.builtins.server_commands`, imported (with click) only when the
``datafn`` command line starts, not by every client and server that loads the plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from datafn.plugin import hookimpl

if TYPE_CHECKING:
    import click


@hookimpl
def datafn_add_commands(cli: click.Group) -> None:
    from datafn.builtins.server_commands import compact, serve

    cli.add_command(serve)
    cli.add_command(compact)
