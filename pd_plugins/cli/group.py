"""The ``pd-run`` click group: one-line errors with exit codes, ``--version``, the built-in commands and the
commands plugins add (``register_commands``), loaded on first parse."""
from __future__ import annotations

import os

import click
from click_default_group import DefaultGroup

from pd_plugins.cli import eval_commands, info_commands, prepare_commands, run_commands, sweep_commands
from pd_plugins.errors import PdPluginsError


def _debug() -> bool:
    return os.environ.get("PD_DEBUG", "") not in ("", "0")


class PdGroup(DefaultGroup):
    """Default-command group that turns expected failures into one line and an exit code."""

    _plugins_added = False

    def main(self, *args, **kwargs):
        return super().main(*args, **kwargs)

    def _add_plugin_commands(self, ctx) -> None:
        if PdGroup._plugins_added:
            return
        PdGroup._plugins_added = True
        from pd_plugins.plugins import get_host

        try:
            get_host().add_commands(self)
        except PdPluginsError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)

    def parse_args(self, ctx, args):
        self._add_plugin_commands(ctx)
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PdPluginsError as exc:
            if _debug() or ctx.meta.get("pd_traceback"):
                raise
            msg = " ".join(str(exc).split("\n")[0:1]) or type(exc).__name__
            click.echo(f"Error: {msg}", err=True)
            ctx.exit(exc.exit_code)


def _version_message() -> str:
    from importlib.metadata import version, PackageNotFoundError

    from pd_plugins import __version__

    parts = [f"pd-plugins {__version__}"]
    for dist in ("torch", "kornia", "pluggy", "click"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} (missing)")
    return ", ".join(parts)


@click.group(cls=PdGroup, default="run", default_if_no_args=False,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(message=_version_message(), version="")
def cli():
    """Dataset distillation with pruning first.

    \b
    Quick start (embedded digits data, CPU, under a minute):
        pd-run --pruner random --distiller dm
    Inspect what is installed:
        pd-run list            pd-run show pruner el2n-window

    Freed memory stays in the process (fewer page faults; PD_PLUGINS_MALLOC=system turns it off).
    """
    from pd_plugins.training.allocator import keep_freed_memory

    keep_freed_memory()


for _module in (run_commands, eval_commands, info_commands, sweep_commands, prepare_commands):
    for _command in _module.COMMANDS:
        cli.add_command(_command)
del _module, _command
