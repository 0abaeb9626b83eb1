"""Digits accuracy of dc/dsa/mtt (quick budgets) against a random real subset of equal size,
plus MTT real vs noise init; dsa-step evaluator (quick budget), a few seeds.

usage: python benchmarks/digits_accuracy.py IPC [SEEDS]  -> benchmarks/results/digits_accuracy_ipcN.json
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch


def main(ipc: int, seeds: int = 2) -> None:
    torch.set_num_threads(1)
    from pd_plugins.pipeline.context import RunContext
    from pd_plugins.data.builtin import digits
    from pd_plugins.plugins import registries
    from pd_plugins.types import DistillResult

    regs = registries()
    splits = digits(None)
    train, test = splits.train, splits.test
    ev_cls = regs["evaluator"].load("dsa-step")
    evaluator = ev_cls(ev_cls.resolve_options({"repeats": 2}, "quick"))
    runs = {"dc": {}, "dsa": {}, "mtt": {}, "mtt-noise": {"init": "noise"}}
    if ipc == 1:  # quick budgets are sized for ipc 10; ipc 1 has one outer step per iteration
        runs["dc"] = runs["dsa"] = {"iterations": 100}
    out: dict = {"ipc": ipc, "dataset": "digits", "evaluator": "dsa-step quick (300 epochs, 2 nets)", "results": {}}
    cache = Path("/tmp/pd-bench-cache")
    for seed in range(seeds):
        ctx = RunContext(seed=seed, cache_dir=cache, stage="distill")
        # random real subset of equal size
        g = ctx.generator("random-baseline")
        pos = torch.cat([idx[torch.randperm(idx.numel(), generator=g)[:ipc]] for idx in train.by_class()])
        acc = evaluator.evaluate(train.subset(pos), test, RunContext(seed=seed, stage="eval"))
        out["results"].setdefault("random", []).append(acc.mean)
        for label, opts in runs.items():
            name = label.split("-")[0]
            cls = regs["distiller"].load(name)
            t = time.perf_counter()
            res: DistillResult = cls(cls.resolve_options(opts, "quick")).distill(train, ipc, ctx)
            dt = time.perf_counter() - t
            acc = evaluator.evaluate(res.as_dataset(train), test, RunContext(seed=seed, stage="eval"), lr=res.lr)
            out["results"].setdefault(label, []).append(acc.mean)
            out.setdefault("distill_seconds", {}).setdefault(label, []).append(round(dt, 1))
            print(ipc, seed, label, round(acc.mean, 4), f"{dt:.0f}s", "lr", res.lr, flush=True)
    out["mean"] = {k: sum(v) / len(v) for k, v in out["results"].items()}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import RESULTS, provenance, write_json

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / f"digits_accuracy_ipc{ipc}.json", {**out, "provenance": provenance()})
    print(json.dumps(out["mean"]))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 2)
