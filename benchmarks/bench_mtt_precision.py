"""MTT accuracy in fp32 against the fastest path (bf16 autocast) on the same seed.

Real MNIST (``--data``, default /work/shared/data/mnist.npz), first 300 images per class, ipc 10,
``quick`` budget, seed 0, the default evaluator; each precision is one ``pd-run`` in its own
subprocess. The fastest path must stay within 0.5 pp of fp32 (issue 17); the script prints the
pair and the difference and exits 0 either way.

usage: python benchmarks/bench_mtt_precision.py [--data PATH] [--seed 0] [--runs DIR]
-> benchmarks/results/mtt_precision.json
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

ROOT = Path(__file__).resolve().parents[1]
PATHS = {"fp32": ["--precision", "fp32"], "bf16": ["--precision", "bf16"]}


def run_one(name: str, data: str, seed: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "pd_plugins", "run", "--dataset", "npz", "--data-root", data,
           "--dataset-option", "name=mnist", "--dataset-option", "train_per_class=300", "--distiller", "mtt",
           "--ipc", "10", "--budget", "quick", "--seed", str(seed), *PATHS[name], "--out", str(out / name),
           "--overwrite", "--json"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise SystemExit(f"{name}: pd-run failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    return {"acc_mean": summary["acc_mean"], "acc_std": summary["acc_std"], "repeats": summary["repeats"],
            "learned_lr": summary.get("learned_lr"), "final_loss": summary.get("final_loss"),
            "wall_s": round(time.perf_counter() - t, 1), "command": " ".join(cmd[1:])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/work/shared/data/mnist.npz")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default="", help="directory for the two run directories (default: a temporary one)")
    a = ap.parse_args()
    out = Path(a.runs) if a.runs else Path(tempfile.mkdtemp(prefix="mtt-precision-"))
    rows = {name: run_one(name, a.data, a.seed, out) for name in PATHS}
    diff = 100 * (rows["bf16"]["acc_mean"] - rows["fp32"]["acc_mean"])
    print(json.dumps({**rows, "bf16_minus_fp32_pp": round(diff, 2)}, indent=2))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import write_result

    write_result("mtt_precision", {"dataset": "mnist, first 300 per class", "ipc": 10, "budget": "quick",
                                   "seed": a.seed, "rows": rows, "bf16_minus_fp32_pp": round(diff, 2),
                                   "within_0_5_pp": abs(diff) <= 0.5},
                 entry_modules=["pd_plugins.distillation.mtt"],
                 plugins=[("distiller", "mtt")])


if __name__ == "__main__":
    main()
