"""Per-iteration cost of every pixel distiller against its compute floor, DSA overhead, peak memory.

floor = the passes an iteration needs at its batch sizes, timed on the same backbone in this run:
  DC/DSA (outer_loop=1, no inner training): K x (fwd+bwd on batch_real + fwd+bwd on ipc);
  DM: K x (fwd on batch_real + fwd+bwd on ipc) (the real side needs no gradient);
  MTT: syn_steps x fwd+bwd on batch_syn.
Ratio = median iteration time / floor. DSA overhead = DSA's iteration time over DC's (the
same gradient matching with and without the Siamese augmentation), in % of DSA's iteration.
Peak memory (on CPU the RSS sampled in a thread, peak above the level before the call; on CUDA
``torch.cuda.max_memory_allocated``) is measured in a fresh subprocess per point: against ipc
for DM and DC, against syn_steps for MTT (unrolled and ``memory=constant``). GLaD/LD3M are in
bench_generative.py.

usage: python benchmarks/bench_distillers.py [--quick] [--device cuda]
       -> benchmarks/results/distillers.json
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RESULTS, PeakRSS, device_name, median_time, pick_device, provenance,  # noqa: E402
                     sync_for, write_json)

IPC, BATCH_REAL = 10, 64
CACHE = Path("/tmp/pd-bench-cache")
MTT = dict(iterations=1, expert_epochs=1, max_start_epoch=1, train_epochs=2, experts=1, lr_img=10.0, lr_lr=1e-6)
GM = {"batch_real": BATCH_REAL, "outer_loop": 1, "inner_loop": 1, "init": "real"}
DM = {"batch_real": BATCH_REAL, "init": "real"}


def _setup():
    torch.set_num_threads(1)
    from pd_plugins.data.builtin import digits

    return digits(None).train


def _ctx(device: str):
    from pd_plugins.pipeline.context import RunContext

    return RunContext(seed=0, device=device, cache_dir=CACHE, stage="bench")


def _passes(ctx, data, n: int, backward: bool, reps: int) -> float:
    """Median time of one forward (and backward) of the run's backbone on ``n`` images."""
    net = ctx.make_model(data.channels, data.num_classes, data.im_size)
    x = torch.randn(n, data.channels, *data.im_size, device=ctx.device)
    y = torch.randint(0, data.num_classes, (n,), device=ctx.device)

    def once():
        if backward:
            loss = torch.nn.functional.cross_entropy(net(x), y)
            torch.autograd.grad(loss, list(net.parameters()))
        else:
            with torch.no_grad():
                net(x)

    return median_time(once, reps, sync_for(ctx.device))


def _distiller(name: str, opts: dict, iterations: int):
    from pd_plugins.plugins import registries

    cls = registries()["distiller"].load(name)
    return cls(cls.resolve_options({**opts, "iterations": iterations, "log_every": 1}))


def _iteration_time(name: str, data, opts: dict, device: str, iterations: int) -> float:
    d = _distiller(name, opts, iterations)
    d.distill(data, IPC, _ctx(device))  # warm-up (and expert training for mtt)
    sync_for(device)()
    t = time.perf_counter()
    d.distill(data, IPC, _ctx(device))
    sync_for(device)()
    return (time.perf_counter() - t) / iterations


def peak_memory(name: str, ipc: int, syn_steps: int, device: str) -> tuple[float, float]:
    """(peak memory added by one iteration of ``name``, process peak RSS), MiB, in this process.

    The first is the CUDA peak allocation on GPU, else the sampled RSS peak above the level
    before the call (experts for MTT are trained before it, in a warm-up call).
    """
    data = _setup()
    memory = "constant" if name == "mtt-constant" else "unrolled"
    name = "mtt" if name == "mtt-constant" else name
    opts = {"dc": GM, "dsa": GM, "dm": DM}.get(name, {**MTT, "syn_steps": syn_steps, "lr_lr": 0.0, "memory": memory})
    d = _distiller(name, opts, 1)
    if name == "mtt":
        d.experts(data, _ctx(device))  # cached trajectories: the measured call only distills
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        d.distill(data, ipc, _ctx(device))
    added = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else rss.added_mib
    return added, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_peak(name: str, ipc: int, syn_steps: int, device: str) -> dict:
    res = subprocess.run([sys.executable, __file__, "peak", name, str(ipc), str(syn_steps), device],
                         capture_output=True, text=True, check=True)
    added, total = json.loads(res.stdout.strip().splitlines()[-1])
    return {"added_mib": round(added, 1), "process_peak_mib": round(total, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and memory points")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(RESULTS / "distillers.json"))
    a = ap.parse_args()
    device = pick_device(a.device)
    reps = 2 if a.quick else 3
    data = _setup()
    ctx = _ctx(device)
    k = data.num_classes
    out: dict = {"dataset": "digits 8x8", "ipc": IPC, "batch_real": BATCH_REAL, "model": "convnet (width 128)",
                 "device": device_name(device), "quick": a.quick, "distillers": {}}
    fb = lambda n: _passes(ctx, data, n, True, reps)  # noqa: E731
    fwd = lambda n: _passes(ctx, data, n, False, reps)  # noqa: E731
    floors = {"dc": k * (fb(BATCH_REAL) + fb(IPC)), "dm": k * (fwd(BATCH_REAL) + fb(IPC))}
    floors["dsa"] = floors["dc"]
    for name, opts in (("dc", GM), ("dsa", GM), ("dm", DM)):
        t = _iteration_time(name, data, opts, device, reps)
        out["distillers"][name] = {"iteration_s": t, "floor_s": floors[name], "ratio": t / floors[name]}
    steps = 10
    floor_mtt = steps * fb(k * IPC)
    t = _iteration_time("mtt", data, {**MTT, "syn_steps": steps}, device, reps)
    out["distillers"]["mtt"] = {"iteration_s": t, "floor_s": floor_mtt, "ratio": t / floor_mtt, "syn_steps": steps}
    dc_t, dsa_t = out["distillers"]["dc"]["iteration_s"], out["distillers"]["dsa"]["iteration_s"]
    out["dsa_overhead_percent_of_iteration"] = 100 * (dsa_t - dc_t) / dsa_t
    out["memory_measure"] = ("CUDA max_memory_allocated during the call" if device.startswith("cuda") else
                             "RSS sampled every 2 ms, peak above the level before the call")
    ipcs = (1, 10) if a.quick else (1, 10, 50)
    out["peak_memory_by_ipc"] = {name: {i: _child_peak(name, i, 1, device) for i in ipcs} for name in ("dm", "dc")}
    steps_list = (10, 40) if a.quick else (5, 10, 20, 40)
    for key, name in (("mtt_peak_memory_by_syn_steps", "mtt"), ("mtt_constant_peak_memory_by_syn_steps", "mtt-constant")):
        out[key] = {s: _child_peak(name, IPC, s, device) for s in steps_list}
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {**out, "provenance": provenance()})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "peak":
        print(json.dumps(peak_memory(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])))
    else:
        main()
