"""Executor overhead and speed-up: an 8-cell digits sweep on the local process pool vs a local Ray
instance with the same number of workers (overhead per cell, target <= 10 %), and MTT expert
training with 1 vs 2 workers (one torch thread each; speed-up, target >= 1.7x on 2 cores).

Ray's start-up and the pool's spawn are timed apart from the work (a sweep or stage pays them
once). Results go to ``benchmarks/results/executor.json`` with the commit, date and load average;
figures measured on a loaded machine say so through ``loadavg``.

    python benchmarks/bench_executor.py [--quick] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import loadavg, write_result  # noqa: E402


def bench_sweep(workers: int, iterations: int, epochs: int) -> dict:
    """The same 8 cells (random pruner, 2 keeps x 4 seeds, DM ipc 2) on the pool and on Ray."""
    import ray

    from pd_plugins.executor import LocalExecutor, Resources
    from pd_plugins.experiments.sweep import Sweep, run_sweep

    sweep = Sweep(name="bench", grid={"pruner": ["random"], "keep": [0.3, 0.6], "seed": [0, 1, 2, 3]},
                  fixed={"distiller": "dm", "ipc": 2, "device": "cpu", "budget": "quick",
                         "distiller_options": {"iterations": iterations, "batch_real": 32},
                         "evaluator_options": {"epochs": epochs}, "eval_repeats": 1})
    cells = len(sweep.cells())
    out: dict = {"cells": cells, "workers": workers}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PD_CACHE_DIR"] = str(Path(tmp) / "cache-local")
        t = time.perf_counter()
        warm = LocalExecutor(workers, Resources(threads=1))  # spawn cost, measured apart
        list(warm.map(abs, [(i, (i,)) for i in range(workers)]))
        warm.close()
        out["pool_spawn_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        local = run_sweep(sweep, Path(tmp) / "local", workers=workers, threads=1, progress=False)
        out["local_s"] = round(time.perf_counter() - t, 2)
        assert local["counts"] == {"done": cells}, local["counts"]

        os.environ["PD_CACHE_DIR"] = str(Path(tmp) / "cache-ray")
        t = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        out["ray_init_s"] = round(time.perf_counter() - t, 2)
        try:
            t = time.perf_counter()
            on_ray = run_sweep(sweep, Path(tmp) / "ray", workers=workers, executor="ray", threads=1, progress=False)
            out["ray_s"] = round(time.perf_counter() - t, 2)
        finally:
            ray.shutdown()
        assert on_ray["counts"] == {"done": cells}, on_ray["counts"]
    out["overhead_per_cell_s"] = round((out["ray_s"] - out["local_s"]) / cells, 3)
    out["overhead_pct"] = round(100 * (out["ray_s"] / out["local_s"] - 1), 1)
    return out


def bench_experts(workers: int, experts: int, epochs: int) -> dict:
    """MTT experts on the digits train split: inline with one thread vs ``workers`` single-thread processes."""
    import torch

    from pd_plugins.pipeline.context import RunContext
    from pd_plugins.data.builtin import digits
    from pd_plugins.executor import LocalExecutor, Resources
    from pd_plugins.distillation.experts import ExpertRecipe, ensure_experts

    torch.set_num_threads(1)
    data = digits(None).train
    recipe = ExpertRecipe(epochs=epochs, batch=64)
    out: dict = {"experts": experts, "epochs": epochs, "images": len(data), "workers": workers}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        ensure_experts(data, RunContext(seed=0, cache_dir=Path(tmp) / "one", stage="distill"), recipe, experts)
        out["one_worker_s"] = round(time.perf_counter() - t, 2)
        pool = LocalExecutor(workers, Resources(threads=1))
        list(pool.map(abs, [(i, (i,)) for i in range(workers)]))  # spawned before timing
        try:
            t = time.perf_counter()
            ensure_experts(data, RunContext(seed=0, cache_dir=Path(tmp) / "many", stage="distill", executor=pool),
                           recipe, experts)
            out["n_workers_s"] = round(time.perf_counter() - t, 2)
        finally:
            pool.close()
    out["speedup"] = round(out["one_worker_s"] / out["n_workers_s"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter cells and fewer expert epochs")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    os.environ.setdefault("PD_LOAD_PLUGINS", "")
    load_before = loadavg()
    sweep = bench_sweep(a.workers, iterations=10 if a.quick else 100, epochs=10 if a.quick else 100)
    print(f"sweep: pool {sweep['local_s']} s, ray {sweep['ray_s']} s for {sweep['cells']} cells: "
          f"{sweep['overhead_per_cell_s']} s ({sweep['overhead_pct']} %) per cell")
    experts = bench_experts(a.workers, experts=4, epochs=2 if a.quick else 10)
    print(f"experts: 1 worker {experts['one_worker_s']} s, {a.workers} workers {experts['n_workers_s']} s: "
          f"{experts['speedup']}x")
    # cells and experts run in child processes: name the code they run so staleness sees it
    write_result("executor", {"quick": a.quick, "cpu_count": os.cpu_count(), "loadavg_before": load_before,
                              "sweep": sweep, "experts": experts},
                 entry_modules=("pd_plugins.pipeline.runner", "pd_plugins.distillation.experts",
                                "pd_plugins.executor", "pd_plugins.experiments.sweep"),
                 plugins=(("distiller", "dm"), ("pruner", "random"), ("evaluator", "dsa-step")))


if __name__ == "__main__":
    main()
