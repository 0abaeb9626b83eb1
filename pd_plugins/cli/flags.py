"""Public helpers for commands, built-in and plugin: the shared run and executor options, config building,
the executor, summary printing and running pipeline stages. Imports nothing heavy at module level."""
from __future__ import annotations

import json
import sys
from typing import Any, Optional

import click

from pd_plugins.config import load_config_file
from pd_plugins.paths import PathParam
from pd_plugins.strategies import BUDGETS

__all__ = ["RUN_FLAGS", "EXECUTOR_FLAGS", "FORCE_FLAG", "FIELD_OF", "MULTI_OF", "run_flags", "executor_flags",
           "driver_output", "make_executor_from", "build_config", "print_summary", "show_traceback", "execute_stages"]


def show_traceback(ctx: click.Context, enabled: bool) -> None:
    """Let a failure in this command print its full traceback (the ``--traceback`` flag) instead of one line."""
    ctx.meta["pd_traceback"] = bool(enabled)


# the run options, shared by run / prune / distill / config and command plugins (`pd-run experts`)
RUN_FLAGS = [
    click.option("--config", "config_file", type=PathParam("file", "config file"),
                 help="YAML/TOML/JSON config; flags win."),
    click.option("--dataset", default="digits", show_default=True, help="dataset name (pd-run list datasets)."),
    click.option("--data-root", default=None, help="local path of the dataset (file or directory)."),
    click.option("--dataset-option", "dataset_option", multiple=True, metavar="KEY=VALUE", help="dataset option."),
    click.option("--pruner", default="none", show_default=True, help="pruner name, or none."),
    click.option("--keep", type=float, default=None,
                 help="keep ratio in (0,1]; default: the distiller's recommended ratio."),
    click.option("-P", "--pruner-option", "pruner_option", multiple=True, metavar="KEY=VALUE", help="pruner option."),
    click.option("--mode", type=click.Choice(["auto", "pool", "init", "init-random"]), default="auto",
                 show_default=True,
                 help="auto: the pruner's paper mode (el2n-window: init; the others: pool); pool: the pruned set "
                      "replaces the real data (Moser et al., Xu et al.); init: exactly ipc per class at the pruner's "
                      "selection edge are the initial images, experts and matching use the full set (Sundar et "
                      "al.); init-random: ipc drawn at random from it."),
    click.option("--subset", default=None, type=PathParam("file", "subset file"),
                 help="CSV/JSON of source indices chosen elsewhere, used instead of a pruner."),
    click.option("--distiller", default="dm", show_default=True, help="distiller name, or none."),
    click.option("--ipc", type=int, default=10, show_default=True, help="synthetic images per class."),
    click.option("-D", "--distiller-option", "distiller_option", multiple=True, metavar="KEY=VALUE",
                 help="distiller option."),
    click.option("--model", default="convnet", show_default=True, help="backbone for distillation and evaluation."),
    click.option("--model-option", "model_option", multiple=True, metavar="KEY=VALUE", help="backbone option."),
    click.option("--augmentation", default="dsa", show_default=True, help="augmentation name."),
    click.option("--evaluator", default="dsa-step", show_default=True, help="evaluation protocol, or none."),
    click.option("-E", "--evaluator-option", "evaluator_option", multiple=True, metavar="KEY=VALUE",
                 help="evaluator option."),
    click.option("--eval-repeats", type=int, default=None, help="fresh networks trained per evaluation."),
    click.option("--budget", type=click.Choice(["auto", *BUDGETS]), default="auto", show_default=True,
                 help="paper settings, scaled-down 'quick' ones, or 'cpu' (tuned for accuracy per CPU-minute); "
                      "auto: quick on digits only."),
    click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True),
    click.option("--compile/--no-compile", "compile_", default=False, help="torch.compile where it pays."),
    click.option("--checkpoint-every", type=int, default=50, show_default=True, help="distiller checkpoint interval."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:i]."),
    click.option("--out", default=None, type=PathParam("output_dir", "output directory"),
                 help="run directory (default: runs/<dataset>-<pruner>-<distiller>-...)."),
    click.option("--overwrite", is_flag=True, help="replace an existing run directory."),
    click.option("--json", "as_json", is_flag=True, help="print the summary as JSON."),
    click.option("--no-progress", is_flag=True, help="no progress bars."),
    click.option("--traceback", is_flag=True, help="show the full traceback on errors."),
]

# click parameter name -> RunConfig field
FIELD_OF = {
    "dataset": "dataset", "data_root": "data_root", "pruner": "pruner", "keep": "keep", "mode": "mode",
    "subset": "subset", "distiller": "distiller", "ipc": "ipc", "model": "model", "augmentation": "augmentation",
    "evaluator": "evaluator", "eval_repeats": "eval_repeats", "budget": "budget", "precision": "precision",
    "compile_": "compile", "checkpoint_every": "checkpoint_every", "seed": "seed", "device": "device", "out": "out",
}
MULTI_OF = {
    "dataset_option": "dataset_options", "pruner_option": "pruner_options", "distiller_option": "distiller_options",
    "model_option": "model_options", "evaluator_option": "evaluator_options",
}


def run_flags(fn):
    """Decorate a command with the run options (``--dataset``, ``--pruner``, ``-P``, ``--distiller``, ...)."""
    for opt in reversed(RUN_FLAGS):
        fn = opt(fn)
    return fn


# where the stages' independent tasks run (experts, scorers, evaluation networks); never part of the config:
# every executor gives the same results
EXECUTOR_FLAGS = [
    click.option("--executor", type=click.Choice(["none", "local", "ray"]), default="none", show_default=True,
                 help="run experts, scorers and evaluation networks in parallel: local processes or Ray."),
    click.option("--workers", type=int, default=None, help="local: worker processes; ray without --address: "
                 "size of the local Ray instance (default: the CPU count)."),
    click.option("--address", default=None, help="Ray cluster to join (host:port; default $RAY_ADDRESS, else local)."),
    click.option("--cpus-per-task", type=float, default=1.0, show_default=True,
                 help="CPUs per task (also its torch threads)."),
    click.option("--gpus-per-task", type=float, default=0.0, show_default=True, help="GPUs per task (Ray)."),
    click.option("--memory-per-task", type=float, default=None, help="GiB of memory per task (Ray)."),
]


FORCE_FLAG = click.option("--force", is_flag=True,
                          help="run even when the estimated peak memory exceeds the free memory (pd-run plan).")


def executor_flags(fn):
    """Decorate a command with the executor options (``--executor``, ``--workers``, ``--address``, ...)."""
    for opt in reversed(EXECUTOR_FLAGS):
        fn = opt(fn)
    return fn


def driver_output(kind: str):
    """See :func:`pd_plugins.executor.driver_output` (imported lazily)."""
    from pd_plugins.executor import driver_output as route

    return route(kind)


def make_executor_from(params: dict):
    """The executor the executor flags ask for."""
    from pd_plugins.executor import Resources, make_executor

    return make_executor(params.get("executor") or "none", workers=params.get("workers"),
                         address=params.get("address"),
                         resources=Resources(cpus=params.get("cpus_per_task") or 1.0,
                                             gpus=params.get("gpus_per_task") or 0.0,
                                             memory_gb=params.get("memory_per_task")))


def build_config(ctx: click.Context, params: dict, base: Optional[dict] = None):
    """RunConfig from (base values) < config file < explicit command-line flags."""
    from click.core import ParameterSource

    from pd_plugins.options import parse_key_values
    from pd_plugins.config import RunConfig

    values: dict[str, Any] = dict(base or {})
    if params.get("config_file"):
        values.update(load_config_file(params["config_file"]))
    cfg_values = RunConfig.from_dict(values).to_dict() if values else RunConfig().to_dict()
    for pname, field in FIELD_OF.items():
        src = ctx.get_parameter_source(pname)
        explicit = src is not None and src not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
        if explicit or field not in values:
            cfg_values[field] = params[pname]
    for pname, field in MULTI_OF.items():
        merged = dict(cfg_values.get(field) or {})
        merged.update(parse_key_values(params.get(pname), flag="--" + pname.replace("_", "-")))
        cfg_values[field] = merged
    cfg_values["progress"] = not params.get("no_progress") and sys.stderr.isatty()
    return RunConfig.from_dict(cfg_values)


def print_summary(summary: dict, as_json: bool) -> None:
    """Print a run summary as an aligned key/value table, or as JSON."""
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    rows = []
    for key, value in summary.items():
        if key == "seconds":
            value = ", ".join(f"{k} {v:.1f}s" for k, v in value.items())
        elif key in ("acc_mean", "acc_std") and isinstance(value, float):
            value = f"{100 * value:.2f}%"
        elif isinstance(value, float):
            value = f"{value:.4g}"
        rows.append((key, str(value)))
    width = max(len(k) for k, _ in rows)
    click.echo("-" * (width + 40))
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")
    click.echo("-" * (width + 40))


def execute_stages(ctx: click.Context, params: dict, stages, base: Optional[dict] = None) -> None:
    """Run ``stages`` of the run the flags in ``params`` describe (over ``base`` values) and print its summary."""
    show_traceback(ctx, params.get("traceback", False))
    from pd_plugins.pipeline.runner import Run

    cfg = build_config(ctx, params, base)
    if "distill" not in stages:
        cfg.distiller_options = {} if cfg.distiller == "none" else cfg.distiller_options
    with make_executor_from(params) as executor, driver_output(executor.kind):
        announce = None if params.get("as_json") else (lambda line: click.echo(line, err=True))
        run = Run(cfg, overwrite=params.get("overwrite", False), executor=executor, announce=announce)
        summary = run.execute(stages, force=params.get("force", False))
    if run.resolved["budget"] != "paper" and not params.get("as_json"):  # after the run: errors stay one line
        click.echo(f"budget '{run.resolved['budget']}': scaled-down settings, recorded in {run.out}/config.json",
                   err=True)
    print_summary(summary, params.get("as_json", False))
