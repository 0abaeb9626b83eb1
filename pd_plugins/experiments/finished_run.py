"""A finished run directory loaded back: its :class:`~pd_plugins.pipeline.runner.Run` and the results
of its finished stages, what the experiments that evaluate a run again (cross-architecture
evaluation, re-evaluation with other settings) start from."""
from __future__ import annotations

from pathlib import Path

from pd_plugins.errors import DataError


def load_run(run_dir, *, progress: bool = False, executor=None):
    """The :class:`~pd_plugins.pipeline.runner.Run` of an existing run directory (its independent
    tasks on ``executor``; default: sequential)."""
    from pd_plugins.pipeline.runner import Run, load_run_config

    if not (Path(run_dir) / "config.json").exists():
        raise DataError(f"{run_dir} is not a run directory (no config.json)")
    cfg = load_run_config(run_dir)
    cfg.out, cfg.progress = str(run_dir), progress
    return Run(cfg, quiet=True, executor=executor)


def finished_stages(run):
    """``(data fingerprint, pruned, distilled)`` of ``run``: its prune and (when it has a distiller)
    distill stages must be finished; ``distilled`` is None without a distiller."""
    data_fp = run.data().train.fingerprint()
    needed = [run.prune_stage] + ([run.distill_stage] if run.distiller is not None else [])
    for stage in needed:
        if not stage.done(data_fp):
            raise DataError(f"{run.out} has no finished {stage.name} stage; run it first (pd-run --out {run.out} ...)")
    pruned = run.prune_stage.load()
    distilled = run.distill_stage.load() if run.distiller is not None else None
    return data_fp, pruned, distilled
