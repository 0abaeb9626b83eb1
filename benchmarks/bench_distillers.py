"""Per-iteration cost of dc/dsa/mtt against a compute floor, DSA overhead, MTT memory vs unroll.

floor = the forward+backward passes an iteration needs at its batch sizes, timed on the same
backbone: DC/DSA (outer_loop=1, so no inner training): K x (fwd+bwd on batch_real + fwd+bwd on
ipc); MTT: syn_steps x fwd+bwd on batch_syn. Ratio = median iteration time / floor, measured in
this run. MTT peak RSS is measured in a fresh subprocess per syn_steps value.

usage: python benchmarks/bench_distillers.py  -> benchmarks/results/distillers.json
"""
from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

IPC, BATCH_REAL, REPS = 10, 64, 3
CACHE = Path("/tmp/pd-bench-cache")
MTT = dict(iterations=1, expert_epochs=1, max_start_epoch=1, train_epochs=2, experts=1, lr_img=10.0, lr_lr=1e-6)


def _setup():
    torch.set_num_threads(1)
    from pd_plugins.datasets import digits

    return digits(None).train


def _fwd_bwd(ctx, data, n: int) -> float:
    net = ctx.make_model(data.channels, data.num_classes, data.im_size)
    x = torch.randn(n, data.channels, *data.im_size)
    y = torch.randint(0, data.num_classes, (n,))
    times = []
    for _ in range(REPS + 1):
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        torch.autograd.grad(loss, list(net.parameters()))
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def _iteration_time(name: str, data, opts: dict, iterations: int = REPS) -> float:
    from pd_plugins.context import RunContext
    from pd_plugins.plugins import registries

    cls = registries()["distiller"].load(name)
    d = cls(cls.resolve_options({**opts, "iterations": iterations, "log_every": 1}))
    ctx = RunContext(seed=0, cache_dir=CACHE, stage="bench")
    d.distill(data, IPC, ctx)  # warm-up (and expert training for mtt)
    t = time.perf_counter()
    d.distill(data, IPC, ctx)
    return (time.perf_counter() - t) / iterations


def mtt_rss(syn_steps: int) -> float:
    """Peak RSS (MiB) of one MTT iteration with ``syn_steps`` (run in this process)."""
    data = _setup()
    from pd_plugins.context import RunContext
    from pd_plugins.distillers.mtt import MTT as M

    # lr_lr=0: memory does not depend on it, and long unrolls on this tiny pool overshoot the expert
    opts = M.resolve_options({**MTT, "syn_steps": syn_steps, "lr_lr": 0.0})
    M(opts).distill(data, IPC, RunContext(seed=0, cache_dir=CACHE, stage="bench"))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    from pd_plugins.context import RunContext

    data = _setup()
    ctx = RunContext(seed=0)
    k = data.num_classes
    out: dict = {"dataset": "digits 8x8", "ipc": IPC, "model": "convnet (width 128)", "threads": 1, "distillers": {}}
    gm = {"batch_real": BATCH_REAL, "outer_loop": 1, "inner_loop": 1, "init": "real"}
    floor_gm = k * (_fwd_bwd(ctx, data, BATCH_REAL) + _fwd_bwd(ctx, data, IPC))
    for name in ("dc", "dsa"):
        t = _iteration_time(name, data, gm)
        out["distillers"][name] = {"iteration_s": t, "floor_s": floor_gm, "ratio": t / floor_gm}
    dc_t, dsa_t = out["distillers"]["dc"]["iteration_s"], out["distillers"]["dsa"]["iteration_s"]
    out["dsa_overhead_percent"] = 100 * (dsa_t - dc_t) / dc_t
    steps = 10
    floor_mtt = steps * _fwd_bwd(ctx, data, k * IPC)
    t = _iteration_time("mtt", data, {**MTT, "syn_steps": steps})
    out["distillers"]["mtt"] = {"iteration_s": t, "floor_s": floor_mtt, "ratio": t / floor_mtt, "syn_steps": steps}
    rss = {}
    for s in (5, 10, 20, 40):
        res = subprocess.run([sys.executable, __file__, "rss", str(s)], capture_output=True, text=True, check=True)
        rss[s] = float(res.stdout.strip().splitlines()[-1])
    out["mtt_peak_rss_mib_by_syn_steps"] = rss
    path = Path(__file__).parent / "results" / "distillers.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "rss":
        print(mtt_rss(int(sys.argv[2])))
    else:
        main()
