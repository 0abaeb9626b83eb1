"""The evaluation commands: ``eval`` (a run directory, an outside set, a re-evaluation or a cross-architecture
table) and ``export`` (a run's distilled set or pruned subset)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pd_plugins.cli.flags import driver_output, executor_flags, make_executor_from, print_summary, show_traceback
from pd_plugins.errors import DataError
from pd_plugins.paths import PathParam
from pd_plugins.strategies import BUDGETS

IMPORT_FLAGS = ("images", "dataset", "data_root", "dataset_option", "model", "model_option", "evaluator",
                "evaluator_option", "eval_repeats", "budget", "seed", "device", "out")
VARIANT_FLAGS = ("evaluator", "evaluator_option", "eval_repeats")  # with RUN_DIR: a re-evaluation


@click.command("eval")
@click.argument("run_dir", type=PathParam("dir", "run directory"), required=False)
@click.option("--images", default=None, type=PathParam("existing", "distilled set"),
              help="evaluate an outside distilled set instead: an image folder, a .pt or a .safetensors.")
@click.option("--dataset", default="digits", show_default=True,
              help="with --images: the dataset it was distilled from.")
@click.option("--data-root", default=None, help="with --images: local path of the dataset.")
@click.option("--dataset-option", "dataset_option", multiple=True, metavar="KEY=VALUE",
              help="with --images: dataset option.")
@click.option("--model", default="convnet", show_default=True, help="with --images: evaluation backbone.")
@click.option("--model-option", "model_option", multiple=True, metavar="KEY=VALUE",
              help="with --images: backbone option.")
@click.option("--evaluator", default="dsa-step", show_default=True,
              help="evaluation protocol; with RUN_DIR: re-evaluate the run's set with it (RUN_DIR/evals/).")
@click.option("-E", "--evaluator-option", "evaluator_option", multiple=True, metavar="KEY=VALUE",
              help="evaluator option; with RUN_DIR: re-evaluate with it, beside the run's own eval.json.")
@click.option("--eval-repeats", type=int, default=None, help="fresh networks trained (with RUN_DIR: a re-evaluation).")
@click.option("--budget", type=click.Choice(["auto", *BUDGETS]), default="auto", show_default=True)
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
@click.option("--metrics", default=None, metavar="robust|hlr,ior,lrs,ars",
              help="DD-Ranking's label- and augmentation-robust scores of the run's set (docs/evaluation.md); "
                   "the evaluator settings come from the run, --evaluator, -E and --eval-repeats.")
@click.option("--real-pool", type=click.Choice(["full", "pruned"]), default="full", show_default=True,
              help="with --metrics: the real pool of Acc_real-hard (the full training split or the pruned set).")
@click.option("--lrs-weight", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="with --metrics: LRS's weight w of IOR.")
@click.option("--ars-weight", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="with --metrics: ARS's weight γ of the augmented difference.")
@executor_flags
@click.pass_context
def eval_cmd(ctx, run_dir, overwrite, as_json, no_progress, traceback, models, repeats, metrics, real_pool,
             lrs_weight, ars_weight, **params):
    """Evaluate the distilled (or pruned) set of a run directory, or an outside set (--images).

    With --models/--repeats: a cross-architecture table (eval.json `cross_arch`, eval.md,
    eval.csv); finished (model, repeat) networks cached under RUN_DIR/eval/ are reused.

    With --evaluator, -E or --eval-repeats: a re-evaluation of the run's set with those settings
    (e.g. -E use_learned_lr=false), written to RUN_DIR/evals/<evaluator>-<hash>.json beside the
    run's own eval.json, which stays as it is.

    With --metrics robust: HLR, IOR, LRS and ARS (DD-Ranking) from the run's set, random real
    subsets of the same ipc and the real pool, all under the same evaluator settings; summary in
    RUN_DIR/robust/robust-<hash>.json, finished networks under RUN_DIR/robust/networks/ are reused.
    """
    from click.core import ParameterSource

    show_traceback(ctx, traceback)
    variant = [k for k in VARIANT_FLAGS if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)]
    robust_only = [k for k in ("real_pool", "lrs_weight", "ars_weight")
                   if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)]
    if metrics is None and robust_only:
        raise click.UsageError(f"--{robust_only[0].replace('_', '-')} applies to --metrics only")
    if metrics is not None:
        if run_dir is None or params["images"] is not None:
            raise click.UsageError("--metrics needs a RUN_DIR (not --images)")
        if models is not None or repeats is not None:
            raise click.UsageError("--metrics does not combine with --models/--repeats")
        _robust(ctx, run_dir, metrics, params, variant, real_pool, lrs_weight, ars_weight, overwrite, as_json,
                no_progress)
        return
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
        print_summary(_eval_images(params, overwrite, no_progress), as_json)
        return
    if run_dir is None:
        raise click.UsageError("give a RUN_DIR, or --images PATH with --dataset")
    given = [k for k in IMPORT_FLAGS if k not in VARIANT_FLAGS
             and ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)]
    if given:
        raise click.UsageError(f"--{given[0].replace('_', '-')} applies to --images only; "
                               "a run directory keeps its config")
    if variant:
        print_summary(_reevaluate(run_dir, params, variant, overwrite, no_progress), as_json)
        return
    cfg = load_run_config(run_dir)
    cfg.progress = not no_progress and sys.stderr.isatty()
    with make_executor_from(params) as executor, driver_output(executor.kind):
        run = Run(cfg, executor=executor)
        if overwrite:
            man = run.dir.manifest()
            man.get("stages", {}).pop(run.eval_stage.name, None)
            from pd_plugins.io import atomic_write_json

            atomic_write_json(run.dir.manifest_path, man)
        summary = run.execute()
    print_summary(summary, as_json)


def _robust(ctx, run_dir, metrics, params, given, pool, w, gamma, overwrite, as_json, no_progress) -> None:
    """`pd-run eval RUN_DIR --metrics ...`: the robust scores, printed as two tables (or JSON)."""
    from click.core import ParameterSource

    from pd_plugins.errors import OptionsError
    from pd_plugins.experiments.robust import markdown, parse_metrics, robust_eval
    from pd_plugins.options import parse_key_values

    others = [k for k in IMPORT_FLAGS if k not in VARIANT_FLAGS
              and ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)]
    if others:
        raise click.UsageError(f"--{others[0].replace('_', '-')} applies to --images only; a run directory keeps its config")
    try:
        which = parse_metrics(metrics)
    except OptionsError as exc:
        raise click.UsageError(str(exc)) from None
    with make_executor_from(params) as executor, driver_output(executor.kind):
        payload = robust_eval(
            run_dir, which, evaluator=params["evaluator"] if "evaluator" in given else None,
            options=parse_key_values(params["evaluator_option"], flag="--evaluator-option"),
            eval_repeats=params["eval_repeats"], pool=pool, w=w, gamma=gamma, overwrite=overwrite,
            progress=not no_progress and sys.stderr.isatty(), executor=executor)
    click.echo(json.dumps(payload, indent=2) if as_json else markdown(payload) + f"\nwrote {payload['path']}",
               nl=True)


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
    evaluation = variant_path(run_dir, payload["evaluator"], payload["fingerprint"])
    summary = {"out": str(run_dir), "evaluation": str(evaluation),
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
    default_out = Path("runs") / f"eval-{images.stem or images.name}-{params['dataset']}-s{params['seed']}"
    out = params["out"] or str(default_out)
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


@click.command("export")
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

    show_traceback(ctx, traceback)
    if not (Path(run_dir) / "config.json").exists():
        raise DataError(f"{run_dir} is not a run directory (no config.json)")
    if what == "subset":
        if formats:
            raise click.UsageError("--format applies to --what distilled; the subset format follows --to's suffix")
        summary = export_subset(run_dir, to, overwrite=overwrite)
    else:
        summary = export_distilled(run_dir, formats, to, overwrite=overwrite)
    print_summary(summary, as_json)


COMMANDS = (eval_cmd, export_cmd)
