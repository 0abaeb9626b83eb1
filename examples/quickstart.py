"""The Python API end to end, at tiny settings (digits, CPU, about a minute).

    python examples/quickstart.py [OUT_DIR]

1. list what is installed; 2. prune with a pruner object directly; 3. run the whole
pipeline (prune -> distill -> eval) into a run directory; 4. evaluate the distilled set on
a second architecture (cross-architecture table).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pd_plugins
from pd_plugins.pipeline.context import RunContext
from pd_plugins.data.builtin import digits
from pd_plugins.experiments.crosseval import eval_run_dir, markdown_table
from pd_plugins.config import RunConfig


def main(out: Path) -> None:
    print("pruners:", pd_plugins.list_pruners(), "distillers:", pd_plugins.list_distillers())

    # a pruner used on its own: positions into the training split, class-balanced
    splits = digits(None)
    pruner = pd_plugins.get_pruner("random")
    result = pruner.prune(splits.train, 0.3, RunContext(seed=0, device="cpu", work_dir=out))
    print(f"random keeps {result.keep.numel()} of {len(splits.train)}: per class {result.meta['per_class_kept']}")

    # the full pipeline; every stage lands atomically in the run directory and resumes if killed
    cfg = RunConfig(pruner="random", keep=0.3, distiller="dm", ipc=2, distiller_options={"iterations": 20},
                    evaluator_options={"epochs": 50}, eval_repeats=2, out=str(out / "run"), progress=False)
    summary = pd_plugins.run(cfg, overwrite=True)
    print(f"DM ipc 2 from 30% of digits: {100 * summary['acc_mean']:.1f} ± {100 * summary['acc_std']:.1f} %")

    # the same synthetic set trained on another architecture (cached per model and repeat)
    payload = eval_run_dir(out / "run", ["convnet", "alexnet"], 2)
    print(markdown_table(payload["cross_arch"]))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/quickstart"))
