"""``pd-run plan``'s estimates against real runs: estimate / measured peak memory and wall time of MTT
(unrolled and constant-memory), DM, DC and expert training, at two sizes each.

Sizes: ``digits`` (8x8, 1438 training images) and ``mnist1k`` (MNIST, the first 100 images of every
class: 28x28, ConvNet-3). Each configuration runs in fresh subprocesses (one thread count for all,
``--threads``, default 2):

* **estimate**: :func:`pd_plugins.planning.estimate.estimate_run` with its timing probes -- what
  ``pd-run plan`` prints for the stage;
* **measure**: the stage for real (``Run.execute`` with the distiller's real iterations; experts through
  ``MTT.experts``), its peak resident set above the level just before the stage (sampled every 2 ms,
  with the allocator pd-run uses) and its wall time. An MTT distillation reads experts a preceding
  process trained into the configuration's cache, so its time is the distillation's alone.

Ratio = estimate / measured; the targets are 0.7-1.3 for memory and 0.5-1.5 for time. The model's
working-set constants (``footprint.STREAM``) and allocator slack (``estimate.ALLOCATOR_SLACK``) come
from single network passes (ConvNet-3 at MNIST size, ConvNet-2 at digits size, batch 40-400, one to six
passes); the rule that phases add up under pd-run's allocator (``estimate.PHASES_ADD_UP``) and DC's traced
synthetic side came from examining these configurations while the model was built.

    python benchmarks/bench_plan.py [--only mtt-unrolled,dm] [--sizes digits,mnist1k] [--toy] [--out DIR]

``--toy`` shrinks every configuration to a few iterations (a smoke test of the script, not a
measurement). -> results/plan.json and plan.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MNIST = "/work/shared/data/mnist.npz"

SIZES = {
    "digits": {"dataset": "digits"},
    "mnist1k": {"dataset": "npz", "data_root": MNIST,
                "dataset_options": {"name": "mnist", "train_per_class": 100, "test_per_class": 10}},
}
_MTT = {"expert_epochs": 2, "max_start_epoch": 2, "train_epochs": 4, "experts": 1}
# method -> size -> (stage measured, distiller, ipc, distiller options); ``experts`` measures MTT.experts.
# Sized for about 5 minutes on 2 quiet cores, with at least 100 MiB to measure at the MNIST size.
CONFIGS = {
    "mtt-unrolled": {"digits": ("distill", "mtt", 10, {**_MTT, "syn_steps": 10, "batch_syn": 100, "iterations": 8}),
                     "mnist1k": ("distill", "mtt", 10, {**_MTT, "syn_steps": 4, "batch_syn": 40, "iterations": 2})},
    "mtt-constant": {"digits": ("distill", "mtt", 10, {**_MTT, "syn_steps": 10, "batch_syn": 100, "iterations": 8,
                                                       "memory": "constant"}),
                     "mnist1k": ("distill", "mtt", 10, {**_MTT, "syn_steps": 4, "batch_syn": 40, "iterations": 2,
                                                        "memory": "constant"})},
    "dm": {"digits": ("distill", "dm", 10, {"iterations": 60, "batch_real": 64}),
           "mnist1k": ("distill", "dm", 10, {"iterations": 15, "batch_real": 100})},
    "dc": {"digits": ("distill", "dc", 1, {"iterations": 30, "outer_loop": 1, "inner_loop": 1, "batch_real": 64}),
           "mnist1k": ("distill", "dc", 10, {"iterations": 1, "outer_loop": 2, "inner_loop": 2, "batch_real": 32,
                                              "init": "real"})},
    "experts": {"digits": ("experts", "mtt", 10, {**_MTT, "syn_steps": 10, "batch_syn": 100, "experts": 3}),
                "mnist1k": ("experts", "mtt", 10, {**_MTT, "syn_steps": 4, "batch_syn": 40, "expert_batch": 128})},
}
TOY = {"iterations": 2, "experts": 1, "train_epochs": 3, "max_start_epoch": 1}


def run_config(size: str, distiller: str, ipc: int, options: dict, cache: str):
    """A ``Run`` of ``distiller`` alone (no pruner, no evaluation) in a fresh folder under ``cache``."""
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.runner import Run

    out = Path(tempfile.mkdtemp(prefix="run-", dir=cache))
    cfg = RunConfig(**SIZES[size], pruner="none", distiller=distiller, ipc=ipc, distiller_options=options,
                    evaluator="none", device="cpu", budget="quick", out=str(out), progress=False)
    return Run(cfg, overwrite=True, quiet=True)


def warm_up(run) -> None:
    """Pay a process's one-time costs before the measured stage: the libraries a stage loads on first use
    (kornia, torchvision and PIL for synthetic.png) and the kernels' first workspaces (a forward and
    backward of two augmented samples). They are part of a process, not of a stage's tensors (about
    50-200 MB here), and are not in the estimate."""
    import torch

    from pd_plugins.viz import save_image_grid

    train = run.data().train
    ctx = run.context("distill")
    x = train.images(torch.arange(2))
    net = ctx.make_model(train.channels, train.num_classes, train.im_size)
    net(ctx.make_augmenter(train)(x, torch.Generator().manual_seed(0))).sum().backward()
    save_image_grid(train.to_unit(x), Path(tempfile.mkdtemp(dir=os.environ["PD_CACHE_DIR"])) / "warm.png")


def worker(job: str, stage: str, size: str, distiller: str, ipc: int, options: dict, cache: str) -> dict:
    """``estimate``: the plan's peak and seconds of ``stage``; ``measure``: the real ones; ``experts``: train
    the configuration's experts (before its distillation is measured)."""
    import torch

    sys.path.insert(0, str(HERE))
    from _common import PeakRSS

    from pd_plugins.planning.estimate import estimate_run

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    run = run_config(size, distiller, ipc, options, cache)
    if job == "estimate":
        t = time.perf_counter()
        found = next(s for s in estimate_run(run, ("distill",)).stages if s.stage == stage)
        return {"peak_bytes": found.peak, "seconds": found.seconds, "parts": found.parts,
                "units": [u.to_json() for u in found.units], "plan_seconds": round(time.perf_counter() - t, 2)}
    run.execute(("prune",))  # the pool (no pruner: the whole set), outside the measurement
    if job == "experts":  # trained into the configuration's cache for its measured distillation
        run.distiller.experts(run.data().train, run.context("distill"))
        return {}
    warm_up(run)
    if stage == "experts":
        pool, ctx = run.data().train, run.context("distill")
        with PeakRSS() as rss:
            t = time.perf_counter()
            run.distiller.experts(pool, ctx)
            seconds = time.perf_counter() - t
    else:
        with PeakRSS() as rss:
            t = time.perf_counter()
            run.execute(("prune", "distill"))
            seconds = time.perf_counter() - t
    return {"peak_bytes": rss.peak - rss.base, "seconds": seconds}


def _spawn(job: str, method: str, size: str, cache: str, threads: int, toy: bool, timeout: int) -> dict:
    env = {**os.environ, "BENCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads), "PD_CACHE_DIR": cache,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, __file__, "--worker", job, "--method", method, "--sizes", size]
    if toy:
        cmd.append("--toy")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


def _config(method: str, size: str, toy: bool) -> tuple:
    stage, distiller, ipc, options = CONFIGS[method][size]
    if toy:
        options = {**options, **{k: v for k, v in TOY.items() if k in options}}
    return stage, distiller, ipc, options


def _row(method: str, size: str, est: dict, meas: dict) -> dict:
    row = {"method": method, "size": size, "estimate": est, "measured": meas}
    if "error" not in est and "error" not in meas:
        row["memory_ratio"] = round(est["peak_bytes"] / max(meas["peak_bytes"], 1), 3)
        row["time_ratio"] = round(est["seconds"] / max(meas["seconds"], 1e-9), 3)
        row["memory_ok"] = 0.7 <= row["memory_ratio"] <= 1.3
        row["time_ok"] = 0.5 <= row["time_ratio"] <= 1.5
    return row


def _table(rows: list[dict]) -> str:
    lines = ["| method | size | memory estimate MiB | measured MiB | ratio | time estimate s | measured s | ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "memory_ratio" not in r:
            err = r["estimate"].get("error") or r["measured"].get("error")
            lines.append(f"| {r['method']} | {r['size']} | error: {err} | | | | | |")
            continue
        e, m = r["estimate"], r["measured"]
        lines.append(f"| {r['method']} | {r['size']} | {e['peak_bytes'] / 2**20:.1f} | {m['peak_bytes'] / 2**20:.1f} | "
                     f"{r['memory_ratio']:.2f} | {e['seconds']:.1f} | {m['seconds']:.1f} | {r['time_ratio']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(CONFIGS), help="methods: " + ", ".join(CONFIGS))
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--toy", action="store_true", help="a few iterations per configuration (smoke test)")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder of plan.json and plan.md")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per subprocess")
    ap.add_argument("--worker", choices=("estimate", "measure", "experts"), help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        stage, distiller, ipc, options = _config(a.method, a.sizes, a.toy)
        print(json.dumps(worker(a.worker, stage, a.sizes, distiller, ipc, options, os.environ["PD_CACHE_DIR"])))
        return
    load_before, rows = os.getloadavg(), []
    with tempfile.TemporaryDirectory(prefix="pd-bench-plan-") as tmp:
        for method in [m for m in a.only.split(",") if m]:
            for size in [s for s in a.sizes.split(",") if s]:
                cache = str(Path(tmp) / f"{method}-{size}")
                Path(cache).mkdir()
                stage, distiller, _, _ = _config(method, size, a.toy)
                if distiller == "mtt" and stage == "distill":  # experts first: the measured distillation reads them
                    prepared = _spawn("experts", method, size, cache, a.threads, a.toy, a.timeout)
                    if "error" in prepared:
                        rows.append(_row(method, size, {}, prepared))
                        continue
                est = _spawn("estimate", method, size, cache, a.threads, a.toy, a.timeout)
                meas = _spawn("measure", method, size, cache, a.threads, a.toy, a.timeout)
                rows.append(_row(method, size, est, meas))
                print(json.dumps(rows[-1]), flush=True)
    sys.path.insert(0, str(HERE))
    from _common import provenance, write_json

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"toy": a.toy, "threads": a.threads, "loadavg_before": list(load_before),
              "loadavg_after": list(os.getloadavg()), "rows": rows,
              "provenance": provenance(["pd_plugins.planning.estimate", "pd_plugins.planning.footprint"],
                                       [("distiller", "mtt"), ("distiller", "dm"), ("distiller", "dc")])}
    write_json(out / "plan.json", report)
    md = [f"# bench_plan{' (toy)' if a.toy else ''}: estimate / measured, {a.threads} threads; load average before "
          f"{report['loadavg_before']}, after {report['loadavg_after']}", "",
          f"Measured on commit `{report['provenance']['commit'][:10]}` ({report['provenance']['date']}).", "",
          "Memory: peak resident set above the level before the stage. Targets: memory 0.7-1.3, time 0.5-1.5.", "",
          _table(rows), ""]
    (out / "plan.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
