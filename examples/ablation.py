"""A small ablation with the API directly: keep ratio x seed for one pruner and DM, with
an unpruned reference, on digits at tiny settings. Prints mean ± std per keep ratio and
Welch's t-test against the unpruned runs.

    python examples/ablation.py [OUT_DIR]

For larger grids use `pd-run sweep` (resumable, parallel) and `pd-run report`.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

from scipy import stats

import pd_plugins
from pd_plugins.config import RunConfig

TINY = dict(distiller="dm", ipc=2, distiller_options={"iterations": 20}, evaluator_options={"epochs": 50},
            eval_repeats=1, progress=False)


def accuracy(out: Path, **settings) -> float:
    return pd_plugins.run(RunConfig(out=str(out), **TINY, **settings), overwrite=True)["acc_mean"]


def main(root: Path, pruner: str = "random", keeps=(0.1, 0.3, 0.6), seeds=(0, 1, 2)) -> None:
    base = [accuracy(root / f"none-s{s}", pruner="none", seed=s) for s in seeds]
    print(f"unpruned     {100 * statistics.fmean(base):6.2f} ± {100 * statistics.stdev(base):.2f}")
    for keep in keeps:
        accs = [accuracy(root / f"{pruner}-{keep}-s{s}", pruner=pruner, keep=keep, seed=s) for s in seeds]
        p = stats.ttest_ind(accs, base, equal_var=False).pvalue
        print(f"keep {keep:<6}  {100 * statistics.fmean(accs):6.2f} ± {100 * statistics.stdev(accs):.2f}"
              f"   Welch p = {p:.3g}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/ablation"))
