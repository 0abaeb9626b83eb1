"""The run commands: ``run`` (the default), ``prune``, ``distill --from`` and ``config``."""
from __future__ import annotations

import json
from pathlib import Path

import click

from pd_plugins.cli.flags import build_config, execute_stages, executor_flags, run_flags
from pd_plugins.errors import DataError
from pd_plugins.paths import PathParam


@click.command("run")
@run_flags
@executor_flags
@click.pass_context
def run_cmd(ctx, **params):
    """Prune, distill and evaluate (the default command)."""
    from pd_plugins.pipeline.runner import STAGES

    execute_stages(ctx, params, STAGES)


@click.command("prune")
@run_flags
@executor_flags
@click.pass_context
def prune_cmd(ctx, **params):
    """Run the pruning stage alone (OUT/prune.pt); continue with `pd-run distill --from OUT`."""
    execute_stages(ctx, params, ("prune",))


@click.command("distill")
@click.option("--from", "from_dir", required=True, type=PathParam("dir", "run directory"),
              help="a run directory with prune.pt.")
@run_flags
@executor_flags
@click.pass_context
def distill_cmd(ctx, from_dir, **params):
    """Distill (and evaluate) from the pruned set of an earlier `pd-run prune` run."""
    import shutil

    from pd_plugins.io import read_json
    from pd_plugins.pipeline.runner import load_run_config, STAGES

    src = Path(from_dir)
    old = load_run_config(src)
    if not (src / "prune.pt").exists():
        raise DataError(f"{src} has no finished prune stage (prune.pt)")
    resolved = read_json(src / "config.json", "run config").get("resolved", {})
    base = old.to_dict()
    base["keep"] = resolved.get("keep", old.keep)
    for key in ("distiller", "ipc", "distiller_options", "out", "evaluator", "eval_repeats"):
        base.pop(key, None)
    if ctx.get_parameter_source("out").name == "DEFAULT":
        params["out"] = f"{src}-{params['distiller']}-ipc{params['ipc']}"
    out = Path(params["out"])
    if not out.exists() or params.get("overwrite"):
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        shutil.copy2(src / "prune.pt", out / "prune.pt")
        man = read_json(src / "manifest.json", "manifest")
        from pd_plugins.io import atomic_write_json

        atomic_write_json(out / "manifest.json", {"stages": {"prune": man["stages"]["prune"]}, "from": str(src)})
        params["overwrite"] = False
    # settings fixed by the prune run (dataset, pruner, keep, seed, ...) come from `base`
    # unless given again on the command line
    execute_stages(ctx, params, STAGES, base=base)


@click.command("config")
@run_flags
@click.pass_context
def config_cmd(ctx, **params):
    """Print the fully resolved config of a run without running it."""
    from pd_plugins.pipeline.runner import Run

    cfg = build_config(ctx, params)
    run = Run(cfg)
    click.echo(json.dumps(run.config_json(), indent=2, default=str))


COMMANDS = (run_cmd, prune_cmd, distill_cmd, config_cmd)
