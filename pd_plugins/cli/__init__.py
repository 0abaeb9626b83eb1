"""``pd-run``: the command line. Heavy imports (torch, kornia) happen inside command bodies,
so ``pd-run --help`` and ``pd-run list`` stay fast."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import click
from click_default_group import DefaultGroup

from pd_plugins.errors import DataError, OptionsError, PdPluginsError
from pd_plugins.config import load_config_file
from pd_plugins.paths import PathParam

KIND_ALIASES = {
    "pruners": "pruner", "distillers": "distiller", "datasets": "dataset", "models": "model",
    "augmentations": "augmentation", "evaluators": "evaluator", "generators": "generator",
}


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
    """


# ----------------------------------------------------------------------------------------
# config files

# ----------------------------------------------------------------------------------------
# the run options, shared by run / prune / config

RUN_FLAGS = [
    click.option("--config", "config_file", type=PathParam("file", "config file"), help="YAML/TOML/JSON config; flags win."),
    click.option("--dataset", default="digits", show_default=True, help="dataset name (pd-run list datasets)."),
    click.option("--data-root", default=None, help="local path of the dataset (file or directory)."),
    click.option("--dataset-option", "dataset_option", multiple=True, metavar="KEY=VALUE", help="dataset option."),
    click.option("--pruner", default="none", show_default=True, help="pruner name, or none."),
    click.option("--keep", type=float, default=None, help="keep ratio in (0,1]; default: the distiller's recommended ratio."),
    click.option("-P", "--pruner-option", "pruner_option", multiple=True, metavar="KEY=VALUE", help="pruner option."),
    click.option("--mode", type=click.Choice(["pool", "init", "init-random"]), default="pool", show_default=True,
                 help="pool: the pruned set replaces the real data; init: exactly ipc per class at the pruner's "
                      "selection edge are the initial images (Sundar et al.); init-random: ipc drawn at random from it."),
    click.option("--subset", default=None, type=PathParam("file", "subset file"),
                 help="CSV/JSON of source indices chosen elsewhere, used instead of a pruner."),
    click.option("--distiller", default="dm", show_default=True, help="distiller name, or none."),
    click.option("--ipc", type=int, default=10, show_default=True, help="synthetic images per class."),
    click.option("-D", "--distiller-option", "distiller_option", multiple=True, metavar="KEY=VALUE", help="distiller option."),
    click.option("--model", default="convnet", show_default=True, help="backbone for distillation and evaluation."),
    click.option("--model-option", "model_option", multiple=True, metavar="KEY=VALUE", help="backbone option."),
    click.option("--augmentation", default="dsa", show_default=True, help="augmentation name."),
    click.option("--evaluator", default="dsa-step", show_default=True, help="evaluation protocol, or none."),
    click.option("-E", "--evaluator-option", "evaluator_option", multiple=True, metavar="KEY=VALUE", help="evaluator option."),
    click.option("--eval-repeats", type=int, default=None, help="fresh networks trained per evaluation."),
    click.option("--budget", type=click.Choice(["auto", "paper", "quick"]), default="auto", show_default=True,
                 help="paper settings, or scaled-down 'quick' ones (auto: quick on digits only)."),
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


def executor_flags(fn):
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


def _print_summary(summary: dict, as_json: bool) -> None:
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


def _execute(ctx, params: dict, stages, base: Optional[dict] = None) -> None:
    ctx.meta["pd_traceback"] = params.get("traceback", False)
    from pd_plugins.pipeline.runner import Run

    cfg = build_config(ctx, params, base)
    if "distill" not in stages:
        cfg.distiller_options = {} if cfg.distiller == "none" else cfg.distiller_options
    with make_executor_from(params) as executor, driver_output(executor.kind):
        run = Run(cfg, overwrite=params.get("overwrite", False), executor=executor)
        summary = run.execute(stages)
    if run.resolved["budget"] != "paper" and not params.get("as_json"):  # after the run: errors stay one line
        click.echo(f"budget '{run.resolved['budget']}': scaled-down settings, recorded in {run.out}/config.json", err=True)
    _print_summary(summary, params.get("as_json", False))


@cli.command("run")
@run_flags
@executor_flags
@click.pass_context
def run_cmd(ctx, **params):
    """Prune, distill and evaluate (the default command)."""
    from pd_plugins.pipeline.runner import STAGES

    _execute(ctx, params, STAGES)


@cli.command("prune")
@run_flags
@executor_flags
@click.pass_context
def prune_cmd(ctx, **params):
    """Run the pruning stage alone (OUT/prune.pt); continue with `pd-run distill --from OUT`."""
    _execute(ctx, params, ("prune",))


@cli.command("distill")
@click.option("--from", "from_dir", required=True, type=PathParam("dir", "run directory"), help="a run directory with prune.pt.")
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
    _execute(ctx, params, STAGES, base=base)


@cli.command("config")
@run_flags
@click.pass_context
def config_cmd(ctx, **params):
    """Print the fully resolved config of a run without running it."""
    from pd_plugins.pipeline.runner import Run

    cfg = build_config(ctx, params)
    run = Run(cfg)
    click.echo(json.dumps(run.config_json(), indent=2, default=str))


IMPORT_FLAGS = ("images", "dataset", "data_root", "dataset_option", "model", "model_option", "evaluator",
                "evaluator_option", "eval_repeats", "budget", "seed", "device", "out")
VARIANT_FLAGS = ("evaluator", "evaluator_option", "eval_repeats")  # with RUN_DIR: a re-evaluation


@cli.command("eval")
@click.argument("run_dir", type=PathParam("dir", "run directory"), required=False)
@click.option("--images", default=None, type=PathParam("existing", "distilled set"),
              help="evaluate an outside distilled set instead: an image folder, a .pt or a .safetensors.")
@click.option("--dataset", default="digits", show_default=True, help="with --images: the dataset it was distilled from.")
@click.option("--data-root", default=None, help="with --images: local path of the dataset.")
@click.option("--dataset-option", "dataset_option", multiple=True, metavar="KEY=VALUE", help="with --images: dataset option.")
@click.option("--model", default="convnet", show_default=True, help="with --images: evaluation backbone.")
@click.option("--model-option", "model_option", multiple=True, metavar="KEY=VALUE", help="with --images: backbone option.")
@click.option("--evaluator", default="dsa-step", show_default=True,
              help="evaluation protocol; with RUN_DIR: re-evaluate the run's set with it (RUN_DIR/evals/).")
@click.option("-E", "--evaluator-option", "evaluator_option", multiple=True, metavar="KEY=VALUE",
              help="evaluator option; with RUN_DIR: re-evaluate with it, beside the run's own eval.json.")
@click.option("--eval-repeats", type=int, default=None, help="fresh networks trained (with RUN_DIR: a re-evaluation).")
@click.option("--budget", type=click.Choice(["auto", "paper", "quick"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:i].")
@click.option("--out", default=None, type=PathParam("output_dir", "output directory"),
              help="with --images: directory for eval.json (default: runs/eval-<name>-...).")
@click.option("--overwrite", is_flag=True, help="recompute a finished evaluation.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--no-progress", is_flag=True)
@click.option("--traceback", is_flag=True, help="show the full traceback on errors.")
@click.option("--models", default=None, metavar="A,B,..",
              help="cross-architecture evaluation: train these models (e.g. convnet,alexnet,vgg11,resnet18,vit).")
@click.option("--repeats", type=int, default=None, help="fresh networks per model for --models (default 5).")
@executor_flags
@click.pass_context
def eval_cmd(ctx, run_dir, overwrite, as_json, no_progress, traceback, models, repeats, **params):
    """Evaluate the distilled (or pruned) set of a run directory, or an outside set (--images).

    With --models/--repeats: a cross-architecture table (eval.json `cross_arch`, eval.md,
    eval.csv); finished (model, repeat) networks cached under RUN_DIR/eval/ are reused.

    With --evaluator, -E or --eval-repeats: a re-evaluation of the run's set with those settings
    (e.g. -E use_learned_lr=false), written to RUN_DIR/evals/<evaluator>-<hash>.json beside the
    run's own eval.json, which stays as it is.
    """
    from click.core import ParameterSource

    ctx.meta["pd_traceback"] = traceback
    variant = [k for k in VARIANT_FLAGS if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)]
    if (models is not None or repeats is not None) and params["images"] is None:
        if run_dir is None:
            raise click.UsageError("--models/--repeats need a RUN_DIR")
        if variant:
            raise click.UsageError(f"--{variant[0].replace('_', '-')} does not combine with --models/--repeats")
        from pd_plugins.experiments.crosseval import eval_run_dir, markdown_table
        from pd_plugins.pipeline.runner import load_run_config as _load

        names = (models or _load(run_dir).model).split(",")
        with make_executor_from(params) as executor, driver_output(executor.kind):
            payload = eval_run_dir(run_dir, names, repeats or 5, overwrite=overwrite,
                                   progress=not no_progress and sys.stderr.isatty(), executor=executor)
        click.echo(json.dumps(payload, indent=2) if as_json else markdown_table(payload["cross_arch"]), nl=not as_json)
        return
    from pd_plugins.pipeline.runner import Run, load_run_config

    if params["images"] is not None:
        if run_dir is not None:
            raise click.UsageError("give a RUN_DIR or --images, not both")
        if params["executor"] != "none":
            raise click.UsageError("--executor applies to a RUN_DIR; --images evaluates in this process")
        _print_summary(_eval_images(params, overwrite, no_progress), as_json)
        return
    if run_dir is None:
        raise click.UsageError("give a RUN_DIR, or --images PATH with --dataset")
    given = [k for k in IMPORT_FLAGS if k not in VARIANT_FLAGS
             and ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)]
    if given:
        raise click.UsageError(f"--{given[0].replace('_', '-')} applies to --images only; a run directory keeps its config")
    if variant:
        _print_summary(_reevaluate(run_dir, params, variant, overwrite, no_progress), as_json)
        return
    cfg = load_run_config(run_dir)
    cfg.progress = not no_progress and sys.stderr.isatty()
    with make_executor_from(params) as executor, driver_output(executor.kind):
        run = Run(cfg, executor=executor)
        if overwrite:
            man = run.manifest()
            man.get("stages", {}).pop("eval", None)
            from pd_plugins.io import atomic_write_json

            atomic_write_json(run.manifest_path, man)
        summary = run.execute()
    _print_summary(summary, as_json)


def _reevaluate(run_dir: str, params: dict, given: list, overwrite: bool, no_progress: bool) -> dict:
    """`pd-run eval RUN_DIR -E ...`: a separate, fingerprinted evaluation of the run's set."""
    from pd_plugins.experiments.reeval import evaluate_variant, read_evaluation, variant_path
    from pd_plugins.options import parse_key_values

    payload = evaluate_variant(
        run_dir, evaluator=params["evaluator"] if "evaluator" in given else None,
        options=parse_key_values(params["evaluator_option"], flag="--evaluator-option"),
        eval_repeats=params["eval_repeats"], overwrite=overwrite, progress=not no_progress and sys.stderr.isatty())
    res = payload["results"][0]
    own = read_evaluation(run_dir)
    summary = {"out": str(run_dir), "evaluation": str(variant_path(run_dir, payload["evaluator"], payload["fingerprint"])),
               "evaluator": payload["evaluator"], "evaluated": payload["evaluated"], "model": res["model"],
               "lr_used": res["options"].get("lr_used"), "acc_mean": res["mean"], "acc_std": res["std"],
               "repeats": len(res["accs"])}
    if own is not None:
        summary["run_eval_acc_mean"] = own["results"][0]["mean"]
        summary["run_eval_lr_used"] = own["results"][0]["options"].get("lr_used")
    return summary


def _eval_images(params: dict, overwrite: bool, no_progress: bool) -> dict:
    """`pd-run eval --images`: evaluate an outside distilled set on a dataset's test split."""
    from pd_plugins.data.interop import evaluate_images
    from pd_plugins.options import parse_key_values
    from pd_plugins.config import RunConfig

    images = Path(params["images"])
    out = params["out"] or str(Path("runs") / f"eval-{images.stem or images.name}-{params['dataset']}-s{params['seed']}")
    cfg = RunConfig(
        dataset=params["dataset"], data_root=params["data_root"],
        dataset_options=parse_key_values(params["dataset_option"], flag="--dataset-option"),
        pruner="none", distiller="none", model=params["model"],
        model_options=parse_key_values(params["model_option"], flag="--model-option"),
        evaluator=params["evaluator"],
        evaluator_options=parse_key_values(params["evaluator_option"], flag="--evaluator-option"),
        eval_repeats=params["eval_repeats"], budget=params["budget"], seed=params["seed"], device=params["device"],
        out=out, progress=not no_progress and sys.stderr.isatty(),
    )
    return evaluate_images(images, cfg, overwrite=overwrite)


@cli.command("export")
@click.argument("run_dir", type=PathParam("dir", "run directory"))
@click.option("--format", "formats", multiple=True, type=click.Choice(["imagefolder", "pt", "safetensors"]),
              help="output format; repeat for several (then --to is a directory holding one output per format).")
@click.option("--what", type=click.Choice(["distilled", "subset"]), default="distilled", show_default=True,
              help="the distilled set, or the pruned subset (CSV/JSON of source indices, labels, scores).")
@click.option("--to", "to", required=True, type=click.Path(), help="output file or directory.")
@click.option("--overwrite", is_flag=True, help="replace an existing target.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--traceback", is_flag=True, help="show the full traceback on errors.")
@click.pass_context
def export_cmd(ctx, run_dir, formats, what, to, overwrite, as_json, traceback):
    """Export a run's distilled set (ImageFolder / .pt / .safetensors) or its pruned subset."""
    from pd_plugins.data.interop import export_distilled, export_subset

    ctx.meta["pd_traceback"] = traceback
    if not (Path(run_dir) / "config.json").exists():
        raise DataError(f"{run_dir} is not a run directory (no config.json)")
    if what == "subset":
        if formats:
            raise click.UsageError("--format applies to --what distilled; the subset format follows --to's suffix")
        summary = export_subset(run_dir, to, overwrite=overwrite)
    else:
        summary = export_distilled(run_dir, formats, to, overwrite=overwrite)
    _print_summary(summary, as_json)


# ----------------------------------------------------------------------------------------
# introspection (no torch import)

def _kind(word: str) -> str:
    w = word.lower()
    kind = KIND_ALIASES.get(w, w)
    from pd_plugins._registry import KINDS

    if kind not in KINDS:
        raise OptionsError(f"unknown kind {word!r}; use one of: {', '.join(k + 's' for k in KINDS)}")
    return kind


@cli.command("list")
@click.argument("kind", required=False)
@click.option("--json", "as_json", is_flag=True)
def list_cmd(kind, as_json):
    """List registered strategies (all kinds, or one: pruners, distillers, ...)."""
    from pd_plugins._registry import KINDS
    from pd_plugins.plugins import registries

    regs = registries()
    kinds = [_kind(kind)] if kind else list(KINDS)
    if as_json:
        click.echo(json.dumps({k + "s": [e.to_json() for e in regs[k].entries()] for k in kinds}, indent=2))
        return
    for k in kinds:
        click.echo(f"{k}s:")
        for e in regs[k].entries():
            alias = f" (aliases: {', '.join(e.aliases)})" if e.aliases else ""
            origin = "" if e.dist in ("pd-plugins", "") else f"  [{e.origin()}]"
            if e.replaces:
                origin = f"  [{e.origin()}, replaces {e.replaces}]"
            click.echo(f"  {e.name:<14} {e.summary}{alias}{origin}")


@cli.command("show")
@click.argument("kind")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def show_cmd(kind, name, as_json):
    """Show one strategy: summary, documentation and its options (type, default, help)."""
    from pd_plugins.options import describe
    from pd_plugins.plugins import registries

    entry = registries()[_kind(kind)].get(name)
    rows = describe(entry.options_class())
    obj = entry.load()
    budgets = getattr(obj, "budgets", {}) or {}
    if as_json:
        click.echo(json.dumps({**entry.to_json(), "doc": entry.doc(), "options": rows, "budgets": budgets},
                              indent=2, default=str))
        return
    click.echo(f"{entry.kind} {entry.name}  ({entry.origin()})")
    click.echo(f"  {entry.summary}")
    click.echo("")
    for line in entry.doc().splitlines():
        click.echo(f"  {line}")
    click.echo("\noptions:")
    if not rows:
        click.echo("  (none)")
    for r in rows:
        click.echo(f"  {r['name']:<16} {r['type']:<14} default={r['default']!r}  {r['help']}")
    for bname, overrides in budgets.items():
        click.echo(f"\nbudget '{bname}' overrides: {json.dumps(overrides)}")


@cli.command("plugins")
@click.option("--all", "show_all", is_flag=True, help="include the built-in plugins.")
@click.option("--hook", default=None, help="only plugins implementing this hook.")
@click.option("--requirements", is_flag=True, help="print name==version lines.")
def plugins_cmd(show_all, hook, requirements):
    """List loaded plugin packages as JSON (and any that failed to load)."""
    from pd_plugins.plugins import get_host

    host = get_host()
    host.registries()
    items = host.plugin_list(include_builtin=show_all)
    if hook:
        items = [p for p in items if hook in p["hooks"]]
    if requirements:
        for dist in sorted({(p["dist"], p["version"]) for p in items if p["dist"]}):
            click.echo(f"{dist[0]}=={dist[1]}")
        return
    failed = [f.__dict__ for f in host.failures]
    click.echo(json.dumps({"plugins": items, "failed": failed}, indent=2))


@cli.command("sweep")
@click.argument("sweep_file", type=PathParam("file", "sweep file"))
@click.option("--out", default=None, type=PathParam("output_dir", "sweep directory"),
              help="sweep directory (default: the file's `out`, else runs/sweep-<name>).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="cells run in parallel (local), or the size of a local Ray instance.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local process pool (spawn) or Ray (extra `ray`).")
@click.option("--address", default=None,
              help="Ray cluster to join (host:port; default $RAY_ADDRESS, else a local instance).")
@click.option("--cpus-per-cell", type=float, default=1.0, show_default=True, help="CPUs Ray reserves per cell.")
@click.option("--gpus-per-cell", type=float, default=0.0, show_default=True, help="GPUs Ray reserves per cell.")
@click.option("--memory-per-cell", type=float, default=None, help="GiB of memory Ray reserves per cell.")
@click.option("--threads", type=int, default=None,
              help="torch threads per cell (default: 1 in workers, torch's own inline).")
@click.option("--json", "as_json", is_flag=True, help="print the sweep summary as JSON.")
@click.option("--no-progress", is_flag=True)
def sweep_cmd(sweep_file, out, workers, executor, address, cpus_per_cell, gpus_per_cell, memory_per_cell, threads,
              as_json, no_progress):
    """Run a grid of runs (pruner x keep x distiller x ipc x seed x dataset); skips finished cells."""
    from pd_plugins.executor import Resources
    from pd_plugins.experiments.sweep import Sweep, run_sweep

    if address and executor != "ray":
        raise OptionsError("--address needs --executor ray")
    sweep = Sweep.load(sweep_file)
    target = out or sweep.out or f"runs/sweep-{sweep.name}"
    resources = Resources(cpus=cpus_per_cell, gpus=gpus_per_cell, memory_gb=memory_per_cell, threads=threads)
    with driver_output(executor):
        summary = run_sweep(sweep, target, workers=workers, executor=executor, threads=threads, address=address,
                            resources=resources, progress=not no_progress and sys.stderr.isatty())
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        for cell in summary["cells"]:
            extra = f"  {cell['error']}" if cell.get("status") == "failed" else ""
            click.echo(f"{cell.get('status', 'pending'):<8} {cell['id']}{extra}")
        click.echo(f"{target}: " + ", ".join(f"{v} {k}" for k, v in summary["counts"].items()))
    if summary["counts"].get("failed"):
        sys.exit(1)


@cli.command("report")
@click.argument("sweep_dir", type=PathParam("dir", "sweep directory"))
@click.option("--evaluator", default=None, help="report the cells' re-evaluations with this evaluator (pd-run eval RUN --evaluator).")
@click.option("-E", "--evaluator-option", "evaluator_option", multiple=True, metavar="KEY=VALUE",
              help="report the cells' re-evaluations with this option (pd-run eval RUN -E KEY=VALUE).")
def report_cmd(sweep_dir, evaluator, evaluator_option):
    """Tables (Markdown + CSV), plots and Welch's t-tests over a sweep directory."""
    from pd_plugins.experiments.report import write_report
    from pd_plugins.options import parse_key_values

    options = parse_key_values(evaluator_option, flag="--evaluator-option")
    selector = {"evaluator": evaluator, "options": options} if evaluator or options else None
    rep = write_report(sweep_dir, selector)
    click.echo((Path(rep["dir"]) / "report.md").read_text())
    click.echo(f"wrote {rep['dir']}: report.md, report.csv, cells.csv" + "".join(f", {Path(p).name}" for p in rep["plots"]))


def main() -> None:  # pragma: no cover - console entry
    cli()


if __name__ == "__main__":  # pragma: no cover
    cli()
