"""The experiment commands: ``sweep`` (a grid of runs) and ``report`` (tables, plots and tests over a sweep)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pd_plugins.cli.flags import driver_output
from pd_plugins.errors import OptionsError
from pd_plugins.paths import PathParam


@click.command("sweep")
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
@click.option("--metrics", default=None, metavar="robust|hlr,ior,lrs,ars",
              help="then compute DD-Ranking's robust scores in every finished cell (pd-run eval RUN --metrics; "
                   "stored scores are reused); pd-run report --metrics tabulates them.")
def sweep_cmd(sweep_file, out, workers, executor, address, cpus_per_cell, gpus_per_cell, memory_per_cell, threads,
              as_json, no_progress, metrics):
    """Run a grid of runs (pruner x keep x distiller x ipc x seed x dataset); skips finished cells."""
    from pd_plugins.executor import Resources
    from pd_plugins.experiments.sweep import Sweep, run_sweep

    if address and executor != "ray":
        raise OptionsError("--address needs --executor ray")
    sweep = Sweep.load(sweep_file)
    which = _metrics(metrics)
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
    failed = bool(summary["counts"].get("failed"))
    if which:
        failed |= _robust_cells(target, which, executor, workers, address, resources, as_json)
    if failed:
        sys.exit(1)


def _metrics(text):
    """The robust scores ``--metrics`` names (None when not given); a bad list is a usage error."""
    if text is None:
        return None
    from pd_plugins.experiments.robust import parse_metrics

    try:
        return parse_metrics(text)
    except OptionsError as exc:
        raise click.UsageError(str(exc)) from None


def _robust_cells(target, which, executor, workers, address, resources, as_json) -> bool:
    """`pd-run sweep --metrics`: the robust scores of every finished cell, its networks on the sweep's
    executor; returns whether a cell failed."""
    from pd_plugins.executor import make_executor
    from pd_plugins.experiments.robust_report import robust_cells

    with make_executor(executor, workers=workers, address=address, resources=resources) as ex, driver_output(executor):
        records = robust_cells(target, which, executor=ex)
    if as_json:
        click.echo(json.dumps({"robust": records}, indent=2))
    else:
        for r in records:
            detail = r["error"] if r["status"] == "failed" else \
                ", ".join(f"{k.upper()} {100 * v:.2f}" for k, v in r["scores"].items())
            click.echo(f"robust   {r['id']}  {r['status']}: {detail}")
    return any(r["status"] == "failed" for r in records)


@click.command("report")
@click.argument("sweep_dir", type=PathParam("dir", "sweep directory"))
@click.option("--evaluator", default=None,
              help="report the cells' re-evaluations with this evaluator (pd-run eval RUN --evaluator).")
@click.option("-E", "--evaluator-option", "evaluator_option", multiple=True, metavar="KEY=VALUE",
              help="report the cells' re-evaluations with this option (pd-run eval RUN -E KEY=VALUE).")
@click.option("--metrics", default=None, metavar="robust|hlr,ior,lrs,ars",
              help="add a table of the cells' stored robust scores (pd-run eval RUN --metrics, pd-run sweep --metrics).")
def report_cmd(sweep_dir, evaluator, evaluator_option, metrics):
    """Tables (Markdown + CSV), plots and Welch's t-tests over a sweep directory."""
    from pd_plugins.experiments.report import write_report
    from pd_plugins.options import parse_key_values

    options = parse_key_values(evaluator_option, flag="--evaluator-option")
    selector = {"evaluator": evaluator, "options": options} if evaluator or options else None
    rep = write_report(sweep_dir, selector, metrics=_metrics(metrics))
    click.echo((Path(rep["dir"]) / "report.md").read_text())
    plots = "".join(f", {Path(p).name}" for p in rep["plots"])
    click.echo(f"wrote {rep['dir']}: report.md, report.csv, cells.csv{plots}")


COMMANDS = (sweep_cmd, report_cmd)
