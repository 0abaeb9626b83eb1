"""Reproduce the comparison columns of Sundar et al. Table 1 for any dataset (no algorithm code).

    python baselines/table1.py --config baselines/configs/mtt/cifar10-ipc10.yaml --pruner el2n-window \
        -P window=0.7,0.8 --out runs/table1-cifar10-ipc10

Columns (one run directory each, under --out):
  random        random subset: `random` pruner keeping ipc images per class, no distiller
  prune-only    the given pruner keeping ipc images per class, no distiller
  distill-only  the distiller on the full training set
  prune-distill the pruner's subset seeds the distiller (--mode, default `init` as in Sundar et al.)
  full          the whole training set, no distiller
  herding, k-center, forgetting
                coreset baselines (algorithms.md 2.7): ipc real images per class selected by the
                distiller of that name on the full set (-C KEY=VALUE sets their network options)
Per-class keep for the subset columns is ipc / (smallest class size), so every class keeps
at least ipc images (exactly ipc on balanced data); a window pruner's window [lo, hi) becomes
[lo, lo + ipc/n_c), its lower edge. With `--mode init` the prune-distill column starts from the
prune-only subset itself (Sundar et al.'s Algorithm 1: the pruned set is the initial synthetic
set); `--mode init-random` and `pool` prune with --prune-keep (default: the window or the
distiller's recommended ratio) and draw ipc at random from that. Writes table1.md and table1.csv.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from pd_plugins.config import load_config_file
from pd_plugins.io import atomic_write_text
from pd_plugins.options import parse_key_values
from pd_plugins.config import RunConfig
from pd_plugins.pipeline.runner import Run

SUBSET_KEYS = ("distiller", "distiller_options", "mode")
CORESETS = ("herding", "k-center", "forgetting")


def ipc_selection(pruner: str, pruner_options: dict, subset_keep: float, budget=None) -> dict:
    """``keep`` and ``pruner_options`` that keep ipc images per class (``subset_keep`` = ipc / n_c).

    A window pruner keeps ``[lo, lo + subset_keep)``: the lower edge of its window, where
    ``--mode init`` takes its ipc samples from; any other pruner keeps ``subset_keep``.
    """
    from pd_plugins.plugins import registries

    opts = registries()["pruner"].load(pruner).resolve_options(pruner_options, budget)
    if not callable(getattr(opts, "fractions", None)):
        return {"pruner_options": pruner_options, "keep": subset_keep}
    lo, hi = opts.fractions()
    if lo + subset_keep > hi + 1e-9:
        raise SystemExit(f"error: window {lo:g},{hi:g} holds fewer than ipc images of the smallest class "
                         f"(needs a width of {subset_keep:g}); widen it or lower ipc")
    return {"pruner_options": {**pruner_options, "window": [lo, lo + subset_keep]}, "keep": None}


def column_configs(base: dict, pruner: str, pruner_options: dict, prune_keep, mode: str, subset_keep: float,
                   subset: dict | None = None) -> dict:
    """The five run configs of one Table 1 row, keyed by column name.

    ``subset`` ({keep, pruner_options}, from :func:`ipc_selection`; default: keep ``subset_keep``)
    is the prune-only selection; with ``mode="init"`` prune-distill starts from it too.
    """
    real = {k: v for k, v in base.items() if k not in SUBSET_KEYS}
    real["distiller"] = "none"
    subset = subset or {"pruner_options": pruner_options, "keep": subset_keep}
    distill_sel = subset if mode == "init" else {"pruner_options": pruner_options, "keep": prune_keep}
    return {
        "random": {**real, "pruner": "random", "keep": subset_keep},
        "prune-only": {**real, "pruner": pruner, **subset},
        "distill-only": {**base, "pruner": "none", "keep": None, "mode": "pool"},
        "prune-distill": {**base, "pruner": pruner, **distill_sel, "mode": mode},
        "full": {**real, "pruner": "none", "keep": None},
    }


def coreset_configs(base: dict, coreset_options: dict) -> dict:
    """The coreset baseline rows: each coreset distiller on the full set at the row's ipc."""
    real = {k: v for k, v in base.items() if k not in SUBSET_KEYS}
    return {name: {**real, "pruner": "none", "keep": None, "mode": "pool", "distiller": name,
                   "distiller_options": dict(coreset_options)} for name in CORESETS}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="distiller paper/CPU config (baselines/configs/<distiller>/...)")
    ap.add_argument("--pruner", default="random", help="pruner of the prune-only and prune-distill columns")
    ap.add_argument("-P", "--pruner-option", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--prune-keep", type=float, default=None,
                    help="keep ratio of prune-distill with --mode pool/init-random (default: window/recommended)")
    ap.add_argument("--mode", choices=("init", "init-random", "pool"), default="init",
                    help="init: prune-distill starts from the prune-only subset (Sundar et al.)")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-C", "--coreset-option", action="append", default=[], metavar="KEY=VALUE",
                    help="option of the coreset rows' network (e.g. epochs=20)")
    ap.add_argument("--columns", default="random,herding,k-center,forgetting,prune-only,distill-only,prune-distill,full")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.mode == "init" and args.prune_keep is not None:
        ap.error("--prune-keep applies to --mode pool/init-random; with init, prune-distill starts from ipc per class")

    base = load_config_file(args.config)
    base.update({k: v for k, v in (("dataset", args.dataset), ("data_root", args.data_root)) if v is not None})
    base["seed"] = args.seed
    probe = Run(RunConfig.from_dict({**base, "distiller": "none", "distiller_options": {}, "pruner": "none",
                                     "out": str(Path(args.out) / "probe")}))
    counts = probe.data().train.class_counts()
    subset_keep = min(1.0, base.get("ipc", 10) / min(counts))
    popts = parse_key_values(args.pruner_option, flag="-P")
    subset = ipc_selection(args.pruner, popts, subset_keep, base.get("budget"))
    configs = column_configs(base, args.pruner, popts, args.prune_keep, args.mode, subset_keep, subset)
    configs.update(coreset_configs(base, parse_key_values(args.coreset_option, flag="-C")))
    rows = []
    for name in args.columns.split(","):
        cfg = RunConfig.from_dict({**configs[name], "out": str(Path(args.out) / name)})
        run = Run(cfg)
        finished = (run.out / "eval.json").exists() and run.manifest().get("stages", {}).get("eval")
        summary = _finished(run) if finished else run.execute()
        rows.append((name, summary["acc_mean"], summary["acc_std"], summary.get("kept"), summary.get("synthetic")))
        print(f"{name:<14} {100 * summary['acc_mean']:.2f} ± {100 * summary['acc_std']:.2f}", flush=True)
    md = ["| column | accuracy (%) | real images used | synthetic |", "|---|---|---|---|"]
    md += [f"| {n} | {100 * m:.2f} ± {100 * s:.2f} | {k if k is not None else '-'} | {y if y is not None else '-'} |"
           for n, m, s, k, y in rows]
    atomic_write_text(Path(args.out) / "table1.md", "\n".join(md) + "\n")
    with open(Path(args.out) / "table1.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("column", "mean", "std", "kept", "synthetic"), *rows])
    return 0


def _finished(run) -> dict:
    """Summary of a finished run directory, read back instead of refusing to redo it."""
    from pd_plugins.io import read_json

    ev = read_json(run.out / "eval.json", "eval result")["results"][0]
    man = read_json(run.out / "config.json", "config")
    return {"acc_mean": ev["mean"], "acc_std": ev["std"], "kept": None, "synthetic": None, "config": man}


if __name__ == "__main__":
    sys.exit(main())
