"""Issue 28's time to 97.5 %: DM on the hardest 20 % of full MNIST, evaluated like time_to_accuracy_dm_paper.

The pool is ``loss-hard`` keep 0.2 with the ``cpu`` budget's scorer (ConvNet-3 width 32, 15 epochs;
its wall clock counts); DM runs 1500 iterations at batch_real 64 on 2 threads, checkpoints every 250
evaluated with ``dsa-step`` at lr 0.01, 1000 epochs x 2 networks on 1 thread. About 2.5 hours on
2 cores; a fixed-scale job (no ``--quick``).

    python benchmarks/bench_time_to_accuracy_mnist_975.py
    -> benchmarks/results/time_to_accuracy_mnist_975.{json,md,png}
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ARGS = ["--distillers", "dm", "--paths", "fp32", "--eval-networks", "2", "--threads", "2", "--eval-threads", "1",
        "--pruner", "loss-hard", "--keep", "0.2", "--pruner-budget", "cpu",
        "--options", '{"dm": {"batch_real": 64, "iterations": 1500}}', "--every", "dm=250",
        "--eval-iterations", "500,750,1000,1250", "--name", "time_to_accuracy_mnist_975"]

if __name__ == "__main__":
    from bench_time_to_accuracy import main

    main(ARGS)
