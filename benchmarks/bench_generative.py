"""Iteration time and peak memory of glad and ld3m vs the pixel distiller with the same objective.

Each method runs in its own subprocess (so peak memory is its own): CUDA peak allocated
memory on a GPU, peak RSS on CPU. Time per iteration = (t(2k) - t(k)) / k, which removes
set-up cost (after a 1-iteration warm-up run). Usage:

    python benchmarks/bench_generative.py --decoder DIR --ldm DIR [--objective dm] [--ipc 10] [--k 5]

Writes benchmarks/results/generative.json and prints the ratios to the pixel distiller.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def measure(method: str, values: dict, ipc: int, k: int, device: str) -> dict:
    import resource
    import time

    import torch

    from pd_plugins.pipeline.context import RunContext
    from pd_plugins.data.builtin import digits
    from pd_plugins.plugins import registries

    train = digits().train
    cls = registries()["distiller"].load(method)
    times = []
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    # glad/ld3m take the objective's batch through objective_options
    batch = {"objective_options": {"batch_real": 64}} if "objective" in values else {"batch_real": 64}
    for iters in (1, k, 2 * k):  # the first run warms up (allocator, lazy imports)
        dist = cls(cls.resolve_options({**values, **batch, "iterations": iters, "log_every": 10 ** 6}))
        t = time.perf_counter()
        dist.distill(train, ipc, RunContext(seed=0, device=device, stage="distill"), train)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"method": method, "sec_per_iter": (times[2] - times[1]) / k, "peak_bytes": int(peak),
            "peak_kind": "cuda_max_allocated" if device.startswith("cuda") else "max_rss"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--decoder", required=True)
    ap.add_argument("--ldm", required=True)
    ap.add_argument("--objective", default="dm")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        method, values = json.loads(args.child)
        print(json.dumps(measure(method, values, args.ipc, args.k, args.device)))
        return
    jobs = [(args.objective, {}), ("glad", {"objective": args.objective, "weights": args.decoder}),
            ("ld3m", {"objective": args.objective, "weights": args.ldm})]
    rows = []
    for method, values in jobs:
        out = subprocess.run([sys.executable, __file__, "--decoder", args.decoder, "--ldm", args.ldm, "--ipc", str(args.ipc),
                              "--k", str(args.k), "--device", args.device, "--child", json.dumps([method, values])],
                             check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    for r in rows:
        r["time_ratio"] = r["sec_per_iter"] / base["sec_per_iter"]
        r["memory_ratio"] = r["peak_bytes"] / base["peak_bytes"]
        print(f"{r['method']:>6}: {r['sec_per_iter'] * 1e3:8.1f} ms/iter (x{r['time_ratio']:.2f}), "
              f"peak {r['peak_bytes'] / 2 ** 20:8.1f} MiB (x{r['memory_ratio']:.2f})")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import RESULTS, provenance, write_json

    plugins = [("distiller", m) for m in ("dm", "glad", "ld3m", args.objective)]
    write_json(RESULTS / "generative.json",
               {"objective": args.objective, "ipc": args.ipc, "k": args.k, "device": args.device,
                "dataset": "digits", "rows": rows, "provenance": provenance(plugins=plugins)})


if __name__ == "__main__":
    main()
