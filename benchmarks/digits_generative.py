"""GLaD / LD3M with trained built-in priors on digits vs a random real subset of equal ipc,
with and without random pruning first (pool mode). Usage:

    python benchmarks/digits_generative.py --decoder DIR --ldm DIR [--ipc 1] [--seeds 0,1,2]

Results go to benchmarks/results/digits_generative_ipcN.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from pd_plugins.pipeline.context import RunContext
from pd_plugins.data.builtin import digits
from pd_plugins.training.evaluate import StepEvaluator
from pd_plugins.io import atomic_write_json
from pd_plugins.plugins import registries
from pd_plugins.pruning.random import RandomPruner
from pd_plugins.distillation.synthetic import class_major_labels, initial_images
from pd_plugins.types import DistillResult


def evaluate(result: DistillResult, train, test, seed: int) -> float:
    ev = StepEvaluator(StepEvaluator.resolve_options({}, "quick"))
    return ev.evaluate(result.as_dataset(train), test, RunContext(seed=seed, stage="eval")).mean


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--decoder", required=True)
    ap.add_argument("--ldm", required=True)
    ap.add_argument("--ipc", type=int, default=1)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--keep", type=float, default=0.2)
    ap.add_argument("--only", default="random,glad,ld3m")
    args = ap.parse_args()
    splits = digits()
    train, test = splits.train, splits.test
    rows: dict[str, list[float]] = {}
    methods = args.only.split(",")
    for seed in map(int, args.seeds.split(",")):
        pruned = RandomPruner().prune(train, args.keep, RunContext(seed=seed, stage="prune")).apply(train)
        for prune_name, pool in (("none", train), (f"random{args.keep}", pruned)):
            if "random" in methods:
                imgs = initial_images(pool, args.ipc, "real", RunContext(seed=seed).generator("real-subset"))
                res = DistillResult(images=imgs, labels=class_major_labels(train.num_classes, args.ipc), ipc=args.ipc,
                                    distiller="real")
                rows.setdefault(f"real-subset/{prune_name}", []).append(evaluate(res, train, test, seed))
            for name, values in (("glad", {"weights": args.decoder}), ("ld3m", {"weights": args.ldm})):
                if name not in methods:
                    continue
                cls = registries()["distiller"].load(name)
                dist = cls(cls.resolve_options(values, "quick"))
                res = dist.distill(pool, args.ipc, RunContext(seed=seed, stage="distill"), pool)
                rows.setdefault(f"{name}/{prune_name}", []).append(evaluate(res, train, test, seed))
            print(json.dumps({k: [round(a, 4) for a in v] for k, v in rows.items()}), flush=True)
    summary = {k: {"accs": v, "mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0}
               for k, v in rows.items()}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import RESULTS, provenance

    atomic_write_json(RESULTS / f"digits_generative_ipc{args.ipc}.json",
                      {"ipc": args.ipc, "seeds": args.seeds, "keep": args.keep, "results": summary,
                       "provenance": provenance()})
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
