"""The ``datafn`` command line: ``plugins``, ``config``, and commands plugins add.

Plugins add sub-commands with the ``datafn_add_commands`` hook; the built-in server and client
plugins add ``serve``, ``sync`` and ``demo`` that way.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from datafn.errors import DatafnError
from datafn.runtime import Runtime

__all__ = ["cli", "main"]


class _Obj:
    """Lazily boots the runtime so that ``--help`` works even with a broken configuration."""

    def __init__(self, pyproject: Path | None) -> None:
        self.pyproject = pyproject
        self._runtime: Runtime | None = None

    def runtime(self, **overrides: Any) -> Runtime:
        if self._runtime is None or overrides:
            self._runtime = Runtime.boot(pyproject=self.pyproject, **overrides)
        return self._runtime


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "pyproject",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="pyproject.toml to read [tool.datafn] from (default: the nearest one that has it).",
)
@click.version_option(package_name="datafn")
@click.pass_context
def cli(ctx: click.Context, pyproject: Path | None) -> None:
    """datafn: offline-first sync engine speaking the DataFn protocol."""
    ctx.obj = _Obj(pyproject)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def plugins(obj: _Obj, as_json: bool) -> None:
    """List the plugins that are loaded and the hooks each implements."""
    # the debugging tool: a plugin whose settings are invalid is listed, and the error shown
    runtime = Runtime.discover(pyproject=obj.pyproject)
    problem: DatafnError | None = None
    try:
        runtime.configure()
    except DatafnError as exc:
        problem = exc
    infos = runtime.plugins.plugins()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": i.name,
                        "distribution": i.distribution,
                        "version": i.version,
                        "builtin": i.builtin,
                        "hooks": list(i.hooks),
                    }
                    for i in infos
                ],
                indent=2,
            )
        )
        if problem is not None:
            click.echo(f"Error in the plugins' settings: {problem}", err=True)
        return
    table = Table(title="datafn plugins")
    table.add_column("plugin")
    table.add_column("distribution")
    table.add_column("hooks")
    for info in infos:
        dist = f"{info.distribution} {info.version}" if info.distribution else "(registered)"
        name = f"{info.name} [dim](built-in)[/dim]" if info.builtin else info.name
        table.add_row(name, dist, "\n".join(info.hooks))
    console = Console(width=max(100, Console().width))
    console.print(table)
    for skipped in runtime.plugins.skipped:
        console.print(f"[yellow]not loaded:[/yellow] {skipped.name} ({skipped.reason})")
    if problem is not None:
        click.echo(f"Error in the plugins' settings: {problem}", err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def config(obj: _Obj, as_json: bool) -> None:
    """Show the effective settings and where each value came from."""
    runtime = obj.runtime()
    rows = list(runtime.config.effective())
    if as_json:
        click.echo(
            json.dumps([{"key": k, "value": v, "source": s} for k, v, s in rows], default=str)
        )
        return
    where = runtime.config.pyproject or "no pyproject.toml with [tool.datafn] found"
    table = Table(title=escape(f"datafn configuration ({where})"))
    table.add_column("key")
    table.add_column("value")
    table.add_column("source")
    for key, value, source in rows:
        table.add_row(key, escape(json.dumps(value, default=str)), escape(source))
    Console(width=max(100, Console().width)).print(table)


def _add_plugin_commands() -> None:
    """Let plugins add commands. A broken configuration still leaves the core commands."""
    pyproject = None
    args = sys.argv[1:]
    if "--config" in args and args.index("--config") + 1 < len(args):
        pyproject = Path(args[args.index("--config") + 1])
    try:
        # without the plugins' settings: a plugin whose settings are invalid still adds its
        # commands, and running one reports the error
        runtime = Runtime.discover(pyproject=pyproject)
    except DatafnError:
        return  # the failing command will report the error itself
    existing = set(cli.commands)
    runtime.plugins.hook.datafn_add_commands(cli=cli)
    for name in set(cli.commands) - existing:
        if name in ("plugins", "config"):
            raise click.UsageError(f"a plugin tried to replace the {name!r} command")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``datafn`` script.

    Every failure is one line on stderr (``Error: …``) and a non-zero exit status (1; 2 for
    usage errors; 130 on Ctrl-C); ``--debug`` (anywhere on the command line) shows the
    traceback as well.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    _add_plugin_commands()
    try:
        cli.main(args=args, prog_name="datafn", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BaseException as exc:  # one line, whatever went wrong
        if isinstance(exc, SystemExit):
            raise
        error = _first_error(exc)
        if isinstance(error, KeyboardInterrupt):
            click.echo("interrupted", err=True)
            sys.exit(130)
        if debug:
            traceback.print_exception(exc)
        if isinstance(error, DatafnError):
            click.echo(f"Error: {error}", err=True)
        else:
            click.echo(
                f"Error: {type(error).__name__}: {error} (run with --debug for the traceback)",
                err=True,
            )
        sys.exit(1)


def _first_error(exc: BaseException) -> BaseException:
    """The error to report: the first one inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
