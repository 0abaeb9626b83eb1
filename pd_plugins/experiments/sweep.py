"""``pd-run sweep``: a grid of ordinary run directories, resumable cell by cell.

A sweep file names grid axes (lists) and fixed settings, both with the keys of a run
config. ``grid`` may also be a list of such grids: the cells are the union of their
products (e.g. fp32 eager next to bf16 + compile without the two mixed cells). Keys are those of a run
config (``pruner``, ``keep``, ``distiller``, ``ipc``, ``seed``, ``dataset`` ...). A dotted
axis such as ``pruner_options.window`` sets one option. Every cell is a normal run
directory under ``SWEEP_DIR/cells/``; finished cells with the same config are skipped, a
killed cell resumes, a cell whose config changed is redone, and a failing cell is
recorded in ``sweep.json`` without stopping the others. A cell whose distillation diverged is
recorded as ``diverged``: an outcome, with what diverged (``divergence``, ``outcome``) and the
path of its last finite state (``kept``, relative to the sweep directory); it is not rerun while its
config stays the same (delete its ``diverged.pt`` to try again).
"""
from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pd_plugins.errors import DataError, DivergenceError, OptionsError, PdPluginsError
from pd_plugins.io import atomic_write_json, atomic_write_text, read_json
from pd_plugins.locks import STALE_AFTER
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
    """``new``, ``finished`` (same config, every stage done), ``diverged`` (same config, its distillation
    diverged: ``diverged.pt`` holds the last finite state), ``resume`` or ``changed``."""
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.runner import Run

    run = Run(RunConfig.from_dict({**cfg_values, "out": str(out)}))
    if not (out / "config.json").exists():
        return "new"
    from pd_plugins.pipeline.run_dir import config_differences

    if config_differences(read_json(out / "config.json", "config"), run.config_json()):
        return "changed"
    stages = ["prune"] + (["distill"] if run.distiller else []) + (["eval"] if run.evaluator else [])
    done = run.manifest().get("stages", {})
    from pd_plugins.pipeline.runner import ARTIFACTS

    if all(done.get(s) and (out / ARTIFACTS[s]).exists() for s in stages):
        return "finished"
    from pd_plugins.pipeline.stages import DIVERGED

    if "distill" in stages and not done.get("distill") and (out / DIVERGED).exists():
        return "diverged"
    return "resume"


def diverged_record(previous: dict, cdir: Path, rel: str) -> dict:
    """The record of a cell that diverged before: the previous sweep's, else rebuilt from its ``diverged.pt``."""
    if previous.get("status") == "diverged" and previous.get("divergence"):
        return {k: v for k, v in previous.items() if k in KEPT_ON_DIVERGED}
    from pd_plugins.errors import divergence_outcome
    from pd_plugins.io import safe_torch_load
    from pd_plugins.pipeline.stages import DIVERGED

    saved = safe_torch_load(cdir / DIVERGED, what="diverged state")
    record = dict(saved.get("divergence") or {})
    return {"error": saved.get("error", ""), "outcome": divergence_outcome(record), "divergence": record,
            "kept": f"{rel}/{DIVERGED}"}


def run_cell(cfg_values: dict, out: str, overwrite: bool, threads: Optional[int] = None,
             lock_wait: float = 0.0) -> dict:
    """Run one cell (in this or a worker process); failures come back as a record, not an exception."""
    t0 = time.perf_counter()
    try:
        if threads:
            import torch

            torch.set_num_threads(threads)
        from pd_plugins.config import RunConfig
        from pd_plugins.pipeline.runner import Run

        summary = Run(RunConfig.from_dict({**cfg_values, "out": out, "progress": False}), overwrite=overwrite,
                      quiet=True, lock_wait=lock_wait).execute()
        return {"status": "done", "summary": summary, "seconds": round(time.perf_counter() - t0, 2)}
    except DivergenceError as exc:  # an outcome of the method, kept with what diverged and the last finite state
        return {"status": "diverged", "error": str(exc), "outcome": exc.outcome(), "divergence": exc.record,
                "seconds": round(time.perf_counter() - t0, 2)}
    except Exception as exc:  # recorded per cell; the sweep goes on
        kind = "" if isinstance(exc, PdPluginsError) else f"{type(exc).__name__}: "
        return {"status": "failed", "error": f"{kind}{exc}", "seconds": round(time.perf_counter() - t0, 2)}


MARKER = ".sweep-token"  # written by the driver: a worker that reads the same token shares its filesystem
# a retried cell waits this long for the claim of a worker that died on another host to go stale
RETRY_LOCK_WAIT = 3 * STALE_AFTER


def remote_cell(cfg_values: dict, out: str, overwrite: bool, marker: str, token: str,
                packed: Optional[bytes] = None) -> dict:
    """A cell on any node. Where the sweep directory is visible (shared filesystem) the cell runs in
    place; elsewhere it runs in a node-local folder (seeded with ``packed``, the driver's unfinished
    copy) that travels back in the record (``folder``) for the driver to install. ``shipped_back``
    says which of the two happened."""
    if _sees_sweep(marker, token):
        return {**run_cell(cfg_values, out, overwrite, lock_wait=RETRY_LOCK_WAIT), "shipped_back": False}
    import tempfile

    from pd_plugins.transfer import pack_dir, unpack_dir

    with tempfile.TemporaryDirectory(prefix="pd-cell-") as tmp:
        local = Path(tmp) / Path(out).name
        if packed:
            unpack_dir(packed, local)
        record = run_cell(cfg_values, str(local), overwrite)
        record["folder"] = pack_dir(local) if local.exists() else None
        record["node_local"] = str(local)
    return {**record, "shipped_back": True}


def _sees_sweep(marker: str, token: str) -> bool:
    try:
        return Path(marker).read_text().strip() == token
    except OSError:
        return False


def _install_cell(record: dict, cdir: Path) -> None:
    """Put a cell folder that came back from another node in place (atomically) and point it at ``cdir``."""
    from pd_plugins.transfer import install_dir

    folder, local = record.pop("folder", None), record.pop("node_local", None)
    if folder is None:
        return
    install_dir(folder, cdir)
    cfg = cdir / "config.json"
    if cfg.exists():
        atomic_write_json(cfg, {**read_json(cfg, "config"), "out": str(cdir)})
    if isinstance(record.get("summary"), dict) and local:
        record["summary"]["out"] = str(cdir)


# what a finished cell's record keeps from the run that finished it
KEPT_ON_SKIP = ("summary", "seconds", "node", "shipped_back")
# what a diverged cell's record keeps from the run that diverged (it is not rerun while its config is the same)
KEPT_ON_DIVERGED = ("error", "outcome", "divergence", "kept", "seconds", "node", "shipped_back")


def run_sweep(sweep: Sweep, out, *, workers: int = 1, executor: str = "local", progress: bool = True,
              threads: Optional[int] = None, address: Optional[str] = None, resources=None) -> dict:
    """Run every missing or changed cell; returns (and writes ``OUT/sweep.json``) the summary.

    ``executor``: ``local`` (``workers`` spawned processes; in this process for 1) or ``ray`` (the
    cluster at ``address`` / ``RAY_ADDRESS``, else a local one); ``resources`` (an
    :class:`~pd_plugins.executor.Resources`) is what each cell asks for.
    """
    from pd_plugins.pipeline.context import RunContext  # noqa: F401  (import check before spawning workers)
    from pd_plugins.executor import InlineExecutor, Resources, make_executor

    out = Path(out)
    cells = sweep.cells()
    if workers < 1:
        raise OptionsError(f"--workers must be >= 1, got {workers}")
    expect_output_dir(out, "sweep directory")
    if executor not in ("local", "ray"):
        raise OptionsError(f"unknown executor {executor!r}; use local or ray")
    resources = resources or Resources(threads=threads)
    out.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    atomic_write_text(out / MARKER, token + "\n")
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
            before = {k: v for k, v in previous.get(cell["id"], {}).items() if k in KEPT_ON_SKIP}
            records[cell["id"]] = {**rec, **before, "status": "skipped"}
            continue
        if state == "diverged":  # a recorded outcome: the same config diverges the same way again
            records[cell["id"]] = {**rec, **diverged_record(previous.get(cell["id"], {}), cdir, rec["dir"]),
                                   "status": "diverged"}
            continue
        rec["state"] = state
        records[cell["id"]] = rec
        jobs.append((cell, cdir, state))
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc=f"sweep {sweep.name}", unit="cell", disable=not progress)
    if not jobs:
        ex = InlineExecutor()
    else:
        ex = make_executor(executor, workers=workers if executor == "ray" or workers > 1 else 1, address=address,
                           resources=resources)
    if ex.kind == "ray":  # cells may land on nodes that do not see OUT: they may carry their folder both ways
        from pd_plugins.transfer import pack_dir

        tasks = [(cell["id"], (cell["config"], str(cdir), state == "changed", str(out / MARKER), token,
                               pack_dir(cdir) if state == "resume" and cdir.exists() else None))
                 for cell, cdir, state in jobs]
        fn = remote_cell
    else:
        tasks = [(cell["id"], (cell["config"], str(cdir), state == "changed", resources.threads))
                 for cell, cdir, state in jobs]
        fn = run_cell
    try:
        for key, result in ex.map(fn, tasks, return_exceptions=True):
            if isinstance(result, BaseException):  # a worker that died for good (retries spent)
                result = {"status": "failed", "error": f"worker failed: {type(result).__name__}: "
                          f"{str(result).strip().splitlines()[0] if str(result).strip() else ''}"}
            _install_cell(result, out / records[key]["dir"])
            if ex.node_of(key):  # the cluster node that ran it (after retries: the one that finished it)
                result["node"] = ex.node_of(key)
            if result.get("divergence", {}).get("kept"):  # the last finite state, relative to the sweep directory
                result["kept"] = f"{records[key]['dir']}/{result['divergence']['kept']}"
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
    nodes = [r["node"] for r in ordered if r.get("node")]
    if nodes:  # cells per cluster node (Ray)
        summary["cells_per_node"] = {n: nodes.count(n) for n in sorted(set(nodes))}
    atomic_write_json(out / "sweep.json", summary)
    return summary


def load_summary(sweep_dir) -> dict:
    """The ``sweep.json`` of a sweep directory."""
    path = expect_dir(sweep_dir, "sweep directory") / "sweep.json"
    if not path.exists():
        raise DataError(f"{sweep_dir} holds no sweep.json; run `pd-run sweep` first")
    return read_json(path, "sweep summary")
