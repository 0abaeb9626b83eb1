"""``pd-run sweep``: a grid of ordinary run directories, resumable cell by cell.

A sweep file names grid axes (lists) and fixed settings, both with the keys of a run
config. ``grid`` may also be a list of such grids: the cells are the union of their
products (e.g. fp32 eager next to bf16 + compile without the two mixed cells). Keys are those of a run
config (``pruner``, ``keep``, ``distiller``, ``ipc``, ``seed``, ``dataset`` ...). A dotted
axis such as ``pruner_options.window`` sets one option. Every cell is a normal run
directory under ``SWEEP_DIR/cells/``; finished cells with the same config are skipped, a
killed cell resumes, a cell whose config changed is redone, and a failing cell is
recorded in ``sweep.json`` without stopping the others.
"""
from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pd_plugins.errors import DataError, OptionsError, PdPluginsError
from pd_plugins.io import atomic_write_json, read_json
from pd_plugins.paths import expect_dir, expect_output_dir

OPTION_GROUPS = ("dataset_options", "pruner_options", "distiller_options", "model_options",
                 "augmentation_options", "evaluator_options")


@dataclass
class Sweep:
    """A parsed sweep file: grid axes (name -> list of values, or a list of such grids) and fixed settings."""

    name: str
    grid: Any
    fixed: dict[str, Any] = field(default_factory=dict)
    out: Optional[str] = None

    @classmethod
    def load(cls, path) -> "Sweep":
        from pd_plugins.config import load_config_file

        values = load_config_file(str(path))
        unknown = set(values) - {"name", "grid", "fixed", "out"}
        if unknown:
            raise OptionsError(f"sweep file {path}: unknown key(s) {sorted(unknown)}; use name, grid, fixed, out")
        grid = values.get("grid") or {}
        grids = grid if isinstance(grid, list) else [grid]
        if not grids or not all(isinstance(g, dict) and g for g in grids):
            raise OptionsError(f"sweep file {path}: 'grid' must map config keys to lists of values (or be a list of such maps)")
        grids = [{str(k).replace("-", "_"): (v if isinstance(v, list) else [v]) for k, v in g.items()} for g in grids]
        grid = grids if isinstance(grid, list) else grids[0]
        fixed = {str(k).replace("-", "_"): v for k, v in (values.get("fixed") or {}).items()}
        return cls(name=str(values.get("name") or Path(path).stem), grid=grid, fixed=fixed, out=values.get("out"))

    @property
    def grids(self) -> list[dict]:
        """The grid as a list of grids (one element for a plain grid)."""
        return self.grid if isinstance(self.grid, list) else [self.grid]

    def cells(self) -> list[dict]:
        """One dict per grid point: ``id``, ``axes`` (the varying values) and ``config``."""
        from pd_plugins.config import RunConfig

        valid = {f for f in RunConfig().to_dict()}
        for key in [k for g in self.grids for k in g] + list(self.fixed):
            base = key.split(".", 1)[0]
            if base not in valid or ("." in key and base not in OPTION_GROUPS):
                raise OptionsError(f"sweep key {key!r} is not a run config key; valid: {', '.join(sorted(valid))}")
        seen: dict[str, dict] = {}
        for grid in self.grids:
            self._product(grid, seen)
        return list(seen.values())

    def _product(self, grid: dict, seen: dict) -> None:
        names = list(grid)
        for values in itertools.product(*(grid[n] for n in names)):
            axes = dict(zip(names, values))
            if axes.get("pruner", self.fixed.get("pruner")) == "none":
                # unpruned: keep and pruner options do not apply, so such cells collapse into one
                axes = {k: v for k, v in axes.items() if k != "keep" and not k.startswith("pruner_options")}
            cfg = _nest({**self.fixed, **axes})
            cid = cell_id(axes, names)
            if cid not in seen:
                seen[cid] = {"id": cid, "axes": axes, "config": cfg}


def _nest(flat: dict) -> dict:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if "." in key:
            group, opt = key.split(".", 1)
            out.setdefault(group, {})
            out[group] = {**out[group], opt: value}
        elif key in OPTION_GROUPS:
            out[key] = {**out.get(key, {}), **(value or {})}
        else:
            out[key] = value
    return out


def _slug(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else str(value)
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_") or "x"


def cell_id(axes: dict, order: list[str]) -> str:
    """A readable, stable directory name from a cell's axis values, e.g. ``pruner=random_keep=0.5``."""
    short = {"pruner_options.": "P.", "distiller_options.": "D.", "evaluator_options.": "E."}
    parts = []
    for name in order:
        if name not in axes:
            continue
        label = name
        for long, s in short.items():
            label = label.replace(long, s)
        parts.append(f"{label}={_slug(axes[name])}")
    return "_".join(parts) or "cell"


def cell_state(cfg_values: dict, out: Path) -> str:
    """``new``, ``finished`` (same config, every stage done), ``resume`` or ``changed``."""
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.runner import Run

    run = Run(RunConfig.from_dict({**cfg_values, "out": str(out)}))
    if not (out / "config.json").exists():
        return "new"
    old = read_json(out / "config.json", "config")
    new = run.config_json()
    if any(old.get(k) != new.get(k) for k in set(old) | set(new) if k not in ("out", "progress")):
        return "changed"
    stages = ["prune"] + (["distill"] if run.distiller else []) + (["eval"] if run.evaluator else [])
    done = run.manifest().get("stages", {})
    from pd_plugins.pipeline.runner import ARTIFACTS

    if all(done.get(s) and (out / ARTIFACTS[s]).exists() for s in stages):
        return "finished"
    return "resume"


def run_cell(cfg_values: dict, out: str, overwrite: bool, threads: Optional[int] = None) -> dict:
    """Run one cell (in this or a worker process); failures come back as a record, not an exception."""
    t0 = time.perf_counter()
    try:
        if threads:
            import torch

            torch.set_num_threads(threads)
        from pd_plugins.config import RunConfig
        from pd_plugins.pipeline.runner import Run

        summary = Run(RunConfig.from_dict({**cfg_values, "out": out, "progress": False}), overwrite=overwrite,
                      quiet=True).execute()
        return {"status": "done", "summary": summary, "seconds": round(time.perf_counter() - t0, 2)}
    except Exception as exc:  # recorded per cell; the sweep goes on
        kind = "" if isinstance(exc, PdPluginsError) else f"{type(exc).__name__}: "
        return {"status": "failed", "error": f"{kind}{exc}", "seconds": round(time.perf_counter() - t0, 2)}


def _executor(kind: str, workers: int):
    """``submit(fn, *args) -> future`` plus ``as_completed`` and ``close`` for local/process/ray."""
    if kind == "ray":
        try:
            import ray
        except ImportError:
            raise OptionsError("--executor ray needs Ray: pip install 'pd-plugins[ray]'") from None
        return _RayExecutor(ray, workers)
    if kind != "local":
        raise OptionsError(f"unknown executor {kind!r}; use local or ray")
    if workers <= 1:
        return _InlineExecutor()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return _PoolExecutor(ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")))


class _InlineExecutor:
    def run(self, jobs):
        for key, fn, args in jobs:
            yield key, fn(*args)

    def close(self):
        pass


class _PoolExecutor:
    def __init__(self, pool):
        self.pool = pool

    def run(self, jobs):
        from concurrent.futures import as_completed

        futures = {self.pool.submit(fn, *args): key for key, fn, args in jobs}
        for fut in as_completed(futures):
            try:
                result = fut.result()
            except Exception as exc:  # a worker process died
                result = {"status": "failed", "error": f"worker failed: {type(exc).__name__}: {exc}"}
            yield futures[fut], result

    def close(self):
        self.pool.shutdown()


class _RayExecutor:
    def __init__(self, ray, workers):
        self.ray = ray
        if not ray.is_initialized():
            ray.init(num_cpus=max(1, workers), include_dashboard=False, ignore_reinit_error=True)
        self.remote = ray.remote(num_cpus=1)(run_cell)

    def run(self, jobs):
        refs = {self.remote.remote(*args): key for key, fn, args in jobs}
        pending = list(refs)
        while pending:
            ready, pending = self.ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    result = self.ray.get(ref)
                except Exception as exc:
                    result = {"status": "failed", "error": f"ray task failed: {type(exc).__name__}: {exc}"}
                yield refs[ref], result

    def close(self):
        pass


def run_sweep(sweep: Sweep, out, *, workers: int = 1, executor: str = "local", progress: bool = True,
              threads: Optional[int] = None) -> dict:
    """Run every missing or changed cell; returns (and writes ``OUT/sweep.json``) the summary."""
    from pd_plugins.pipeline.context import RunContext  # noqa: F401  (import check before spawning workers)

    out = Path(out)
    cells = sweep.cells()
    if workers < 1:
        raise OptionsError(f"--workers must be >= 1, got {workers}")
    expect_output_dir(out, "sweep directory")
    out.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict] = {}
    previous = {}
    if (out / "sweep.json").exists():
        previous = {c["id"]: c for c in read_json(out / "sweep.json", "sweep summary").get("cells", [])}
    jobs = []
    for cell in cells:
        cdir = out / "cells" / cell["id"]
        rec = {"id": cell["id"], "dir": str(cdir.relative_to(out)), "axes": cell["axes"]}
        try:
            state = cell_state(cell["config"], cdir)
        except PdPluginsError as exc:
            records[cell["id"]] = {**rec, "status": "failed", "error": str(exc)}
            continue
        if state == "finished":  # keep what the run that finished it recorded
            before = {k: v for k, v in previous.get(cell["id"], {}).items() if k in ("summary", "seconds")}
            records[cell["id"]] = {**rec, **before, "status": "skipped"}
            continue
        rec["state"] = state
        records[cell["id"]] = rec
        jobs.append((cell["id"], run_cell, (cell["config"], str(cdir), state == "changed", threads)))
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc=f"sweep {sweep.name}", unit="cell", disable=not progress)
    ex = _executor(executor, workers) if jobs else _InlineExecutor()
    try:
        for key, result in ex.run(jobs):
            records[key].update(result)
            bar.update(1)
            _write_summary(out, sweep, cells, records)
    finally:
        ex.close()
        bar.close()
    return _write_summary(out, sweep, cells, records)


def _write_summary(out: Path, sweep: Sweep, cells: list, records: dict) -> dict:
    ordered = [records[c["id"]] for c in cells]
    counts: dict[str, int] = {}
    for r in ordered:
        counts[r.get("status", "pending")] = counts.get(r.get("status", "pending"), 0) + 1
    summary = {"name": sweep.name, "grid": sweep.grid, "fixed": sweep.fixed, "counts": counts, "cells": ordered}
    atomic_write_json(out / "sweep.json", summary)
    return summary


def load_summary(sweep_dir) -> dict:
    """The ``sweep.json`` of a sweep directory."""
    path = expect_dir(sweep_dir, "sweep directory") / "sweep.json"
    if not path.exists():
        raise DataError(f"{sweep_dir} holds no sweep.json; run `pd-run sweep` first")
    return read_json(path, "sweep summary")
