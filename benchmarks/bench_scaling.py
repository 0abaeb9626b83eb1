"""Scaling of the scoring pass and of a DM iteration with dataset size and ipc (MNIST subset).

* scoring: ``pd_plugins.pruning.scoring.sample_statistic`` (the early-loss/loss-easy statistic pass)
  with one fixed, seeded ConvNet over n, 2n and 4n MNIST training images;
* DM: the time of one outer iteration (median over the timed iterations, set-up excluded)
  at 1x, 2x, 4x ipc on a fixed pool, and at 1x, 2x, 4x pool size with a fixed ipc.

Each exponent is the slope of ``log(time)`` on ``log(scale)`` (``scipy.stats.linregress``);
1 is linear, 0 is flat. Every ratio is measured in this one run.

    python benchmarks/bench_scaling.py [--quick] [--device auto|cpu|cuda]  -> benchmarks/results/scaling.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import device_name, loadavg, median_time, pick_device, sync_for, write_result  # noqa: E402

MNIST = Path("/work/shared/data/mnist.npz")
SCALES = (1, 2, 4)


def exponent(scales, times) -> float:
    import numpy as np
    from scipy.stats import linregress

    return float(linregress(np.log(scales), np.log(times)).slope)


def mnist_subset(n: int):
    import torch

    from pd_plugins.data.builtin import npz

    train = npz(str(MNIST)).train
    if n > len(train):
        raise SystemExit(f"asked for {n} images; MNIST train has {len(train)}")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    return train.subset(perm[:n])


def scoring_times(data, ctx, sizes, repeats: int, sync) -> list:
    from pd_plugins.pruning.scoring import sample_statistic

    with ctx.fork_rng("scaling-net"):
        net = ctx.make_model(data.channels, data.num_classes, data.im_size).eval()
    out = []
    for n in sizes:
        part = data.subset(range(n))
        out.append(median_time(lambda: sample_statistic(net, part, ctx, "loss", 512), repeats, sync))
    return out


def dm_iteration_time(data, ipc: int, ctx, iterations: int, batch_real: int, sync) -> float:
    """Median seconds per DM outer iteration, timed through the iteration log callback."""
    from dataclasses import replace

    from pd_plugins.plugins import registries

    cls = registries()["distiller"].load("dm")
    stamps = []

    def on_log(step, metrics):
        sync()
        stamps.append(time.perf_counter())

    d = cls(cls.resolve_options({"iterations": iterations + 1, "batch_real": batch_real, "log_every": 1}))
    d.distill(data, ipc, replace(ctx, on_log=on_log))
    gaps = sorted(b - a for a, b in zip(stamps, stamps[1:]))  # first iteration (warm-up) excluded
    return gaps[len(gaps) // 2]


def main() -> None:
    import torch

    from pd_plugins.pipeline.context import RunContext

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (n=250, ipc 1..4, batch_real 16, 4 DM iterations)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="CPU torch threads (1: stable on a shared machine)")
    a = ap.parse_args()
    if not MNIST.exists():
        raise SystemExit(f"{MNIST} not found")
    torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    sync = sync_for(device)
    base_n, base_ipc, iters, reps, batch_real = (250, 1, 4, 3, 16) if a.quick else (5000, 10, 20, 5, 256)
    pool = mnist_subset(base_n * SCALES[-1])
    ctx = RunContext(seed=0, device=device, stage="bench")
    result = {"device": device_name(device), "dataset": "mnist subset", "quick": a.quick, "torch": torch.__version__}

    sizes = [base_n * s for s in SCALES]
    t_score = scoring_times(pool, ctx, sizes, reps, sync)
    result["scoring"] = {"n": sizes, "seconds": t_score, "per_sample_us": [1e6 * t / n for t, n in zip(t_score, sizes)],
                         "exponent": exponent(SCALES, t_score)}

    ipcs = [base_ipc * s for s in SCALES]
    t_ipc = [dm_iteration_time(pool.subset(range(base_n)), ipc, ctx, iters, batch_real, sync) for ipc in ipcs]
    result["dm_vs_ipc"] = {"ipc": ipcs, "pool": base_n, "batch_real": batch_real, "iteration_s": t_ipc,
                           "exponent": exponent(SCALES, t_ipc)}
    t_pool = [dm_iteration_time(pool.subset(range(n)), base_ipc, ctx, iters, batch_real, sync) for n in sizes]
    result["dm_vs_pool"] = {"pool": sizes, "ipc": base_ipc, "batch_real": batch_real, "iteration_s": t_pool,
                            "exponent": exponent(SCALES, t_pool)}

    print(f"device {result['device']}, load average {loadavg()}")
    for s, n, t in zip(SCALES, sizes, t_score):
        print(f"scoring  {s}x n={n:6d}: {t * 1e3:8.1f} ms  ratio to 1x {t / t_score[0]:.2f}")
    print(f"scoring exponent (log-log slope): {result['scoring']['exponent']:.3f}")
    for s, ipc, t in zip(SCALES, ipcs, t_ipc):
        print(f"DM iter  {s}x ipc={ipc:3d}: {t * 1e3:8.1f} ms  ratio to 1x {t / t_ipc[0]:.2f}")
    print(f"DM exponent vs ipc: {result['dm_vs_ipc']['exponent']:.3f}")
    for s, n, t in zip(SCALES, sizes, t_pool):
        print(f"DM iter  {s}x pool={n:6d}: {t * 1e3:8.1f} ms  ratio to 1x {t / t_pool[0]:.2f}")
    print(f"DM exponent vs pool size: {result['dm_vs_pool']['exponent']:.3f}")
    write_result("scaling", result)


if __name__ == "__main__":
    main()
