"""Helpers for tests that run ``python -m pd_plugins`` in separate processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

DM_TINY = ["--pruner", "random", "--ipc", "2", "-D", "iterations=3", "-E", "epochs=2", "--eval-repeats", "1"]
MTT_TINY = ["--pruner", "none", "--distiller", "mtt", "--ipc", "1", "-D", "iterations=3", "-D", "syn_steps=2",
            "-D", "expert_epochs=1", "-D", "max_start_epoch=1", "-D", "train_epochs=2", "-D", "experts=2",
            "-D", "expert_batch=64", "-E", "epochs=2", "--eval-repeats", "1"]


def env(cache: Path) -> dict:
    """One CPU thread, no third-party plugins, a private cache directory."""
    e = {k: v for k, v in os.environ.items() if k not in ("PD_STRICT_PLUGINS",)}
    e.update(PYTHONPATH=str(REPO), PD_LOAD_PLUGINS="", PD_CACHE_DIR=str(cache), OMP_NUM_THREADS="1",
             MKL_NUM_THREADS="1")
    return e


def command(args, out: Path) -> list[str]:
    return [sys.executable, "-m", "pd_plugins", "run", *map(str, args), "--device", "cpu", "--no-progress",
            "--out", str(out)]


def run(args, out: Path, cache: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    res = subprocess.run(command(args, out), env=env(cache), cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


def kill_when(args, out: Path, cache: Path, ready, timeout: float = 120) -> int:
    """Start a run, SIGKILL it as soon as ``ready(out)`` holds; returns how many polls it took."""
    proc = subprocess.Popen(command(args, out), env=env(cache), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    t0, polls = time.monotonic(), 0
    try:
        while not ready(out):
            polls += 1
            if proc.poll() is not None:
                raise AssertionError(f"run finished (rc {proc.returncode}) before the kill point: {proc.stderr.read()[-500:]}")
            if time.monotonic() - t0 > timeout:
                raise AssertionError("kill point never reached")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return polls


def distilled(out: Path) -> dict:
    """All tensors of distill.pt."""
    saved = torch.load(out / "distill.pt", map_location="cpu", weights_only=True)
    return {k: v for k, v in saved.items() if isinstance(v, torch.Tensor)}


def accs(out: Path) -> list:
    import json

    return [r["accs"] for r in json.loads((out / "eval.json").read_text())["results"]]


def assert_same_run(a: Path, b: Path) -> None:
    """Bit-identical distilled tensors, prune selection and evaluation accuracies."""
    ta, tb = distilled(a), distilled(b)
    assert ta.keys() == tb.keys() and "images" in ta
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    pa = torch.load(a / "prune.pt", weights_only=True)["keep"]
    pb = torch.load(b / "prune.pt", weights_only=True)["keep"]
    assert torch.equal(pa, pb)
    assert accs(a) == accs(b)
