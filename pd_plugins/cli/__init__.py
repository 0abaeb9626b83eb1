"""``pd-run``: the command line. Heavy imports (torch, kornia) happen inside command bodies,
so ``pd-run --help`` and ``pd-run list`` stay fast.

Layout: :mod:`~pd_plugins.cli.group` (the click group), :mod:`~pd_plugins.cli.flags` (the public helpers
command plugins use), and one module per command family (``run_commands``, ``eval_commands``,
``info_commands``, ``sweep_commands``, ``prepare_commands``)."""
from __future__ import annotations

import importlib
import warnings

from pd_plugins.cli.flags import (build_config, driver_output, execute_stages, executor_flags, make_executor_from,
                                  print_summary, run_flags, show_traceback)
from pd_plugins.cli.group import cli

__all__ = ["cli", "main", "build_config", "driver_output", "execute_stages", "executor_flags", "make_executor_from",
           "print_summary", "run_flags", "show_traceback"]

# names the flat ``pd_plugins/cli.py`` had, importable from here for one release: old name -> (module, new name)
_MOVED = {
    "_print_summary": ("flags", "print_summary"),
    "_execute": ("flags", "execute_stages"),
    "RUN_FLAGS": ("flags", "RUN_FLAGS"),
    "EXECUTOR_FLAGS": ("flags", "EXECUTOR_FLAGS"),
    "FIELD_OF": ("flags", "FIELD_OF"),
    "MULTI_OF": ("flags", "MULTI_OF"),
    "PdGroup": ("group", "PdGroup"),
    "_debug": ("group", "_debug"),
    "_version_message": ("group", "_version_message"),
    "run_cmd": ("run_commands", "run_cmd"),
    "prune_cmd": ("run_commands", "prune_cmd"),
    "distill_cmd": ("run_commands", "distill_cmd"),
    "config_cmd": ("run_commands", "config_cmd"),
    "IMPORT_FLAGS": ("eval_commands", "IMPORT_FLAGS"),
    "VARIANT_FLAGS": ("eval_commands", "VARIANT_FLAGS"),
    "eval_cmd": ("eval_commands", "eval_cmd"),
    "export_cmd": ("eval_commands", "export_cmd"),
    "_reevaluate": ("eval_commands", "_reevaluate"),
    "_eval_images": ("eval_commands", "_eval_images"),
    "KIND_ALIASES": ("info_commands", "KIND_ALIASES"),
    "_kind": ("info_commands", "_kind"),
    "list_cmd": ("info_commands", "list_cmd"),
    "show_cmd": ("info_commands", "show_cmd"),
    "plugins_cmd": ("info_commands", "plugins_cmd"),
    "sweep_cmd": ("sweep_commands", "sweep_cmd"),
    "report_cmd": ("sweep_commands", "report_cmd"),
    "load_config_file": ("pd_plugins.config", "load_config_file"),
}


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, new = _MOVED[name]
    path = module if "." in module else f"{__name__}.{module}"
    warnings.warn(f"pd_plugins.cli.{name} is deprecated and will be removed in the next release; "
                  f"use {path}.{new}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(path), new)


def main() -> None:  # pragma: no cover - console entry
    """Console entry point: run the ``pd-run`` group."""
    cli()
