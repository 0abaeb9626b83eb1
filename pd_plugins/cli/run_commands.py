"""The run commands: ``run`` (the default), ``prune``, ``distill --from``, ``config`` and ``plan``."""
from __future__ import annotations

import json
from pathlib import Path

import click

from pd_plugins.cli.flags import FORCE_FLAG, build_config, execute_stages, executor_flags, run_flags, show_traceback
from pd_plugins.errors import DataError
from pd_plugins.paths import PathParam


@click.command("run")
@run_flags
@executor_flags
@FORCE_FLAG
@click.pass_context
def run_cmd(ctx, **params):
    """Prune, distill and evaluate (the default command)."""
    from pd_plugins.pipeline.runner import STAGES

    execute_stages(ctx, params, STAGES)


@click.command("prune")
@run_flags
@executor_flags
@FORCE_FLAG
@click.pass_context
def prune_cmd(ctx, **params):
    """Run the pruning stage alone (OUT/prune.pt); continue with `pd-run distill --from OUT`."""
    execute_stages(ctx, params, ("prune",))


@click.command("distill")
@click.option("--from", "from_dir", required=True, type=PathParam("dir", "run directory"),
              help="a run directory with prune.pt.")
@run_flags
@executor_flags
@FORCE_FLAG
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


@click.command("plan")
@run_flags
@executor_flags
@FORCE_FLAG
@click.pass_context
def plan_cmd(ctx, **params):
    """Estimate a run's memory and time without running it (takes `pd-run run`'s flags).

    Prints the parameters of the networks used, the data's bytes, stored expert trajectories, and
    each stage's peak memory (from the networks' shapes) and time (from timed probes of its work at
    the real shapes), against the free memory."""
    show_traceback(ctx, params.get("traceback", False))
    from pd_plugins.pipeline.runner import Run, STAGES
    from pd_plugins.planning.budget import free_memory
    from pd_plugins.planning.estimate import estimate_run
    from pd_plugins.planning.report import format_estimate

    run = Run(build_config(ctx, params), quiet=True)
    run._check_inputs(STAGES)  # the data, a --subset file, a distiller's inputs: as `pd-run run` checks them
    estimate = estimate_run(run, STAGES)
    free = free_memory(run.device)
    if params.get("as_json"):
        click.echo(json.dumps({**estimate.to_json(), "free_bytes": free[0] if free else None,
                               "free_of": free[1] if free else None}, indent=2))
    else:
        click.echo(format_estimate(estimate, free))


COMMANDS = (run_cmd, prune_cmd, distill_cmd, config_cmd, plan_cmd)
