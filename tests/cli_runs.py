"""Helpers for tests that call ``pd-run`` in this process (click's CliRunner)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from click.testing import CliRunner


def invoke(*args):
    """``pd-run ARGS`` in this process; returns click's Result."""
    from pd_plugins.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


@contextlib.contextmanager
def isolated_cli(root: Path):
    """A fresh host with only the built-in plugins and ``root/cache`` as PD_CACHE_DIR while the block runs
    (a module fixture that builds a run once and keeps it for its tests)."""
    from pd_plugins import plugins

    old_host, old_cache = plugins._host, os.environ.get("PD_CACHE_DIR")
    plugins.set_host(plugins.Host(load_entrypoints=False))
    os.environ["PD_CACHE_DIR"] = str(Path(root) / "cache")
    try:
        yield
    finally:
        plugins.set_host(old_host)
        if old_cache is None:
            os.environ.pop("PD_CACHE_DIR", None)
        else:
            os.environ["PD_CACHE_DIR"] = old_cache
