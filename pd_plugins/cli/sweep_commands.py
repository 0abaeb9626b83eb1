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


@click.command("report")
@click.argument("sweep_dir", type=PathParam("dir", "sweep directory"))
@click.option("--evaluator", default=None,
              help="report the cells' re-evaluations with this evaluator (pd-run eval RUN --evaluator).")
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
    plots = "".join(f", {Path(p).name}" for p in rep["plots"])
    click.echo(f"wrote {rep['dir']}: report.md, report.csv, cells.csv{plots}")


COMMANDS = (sweep_cmd, report_cmd)
