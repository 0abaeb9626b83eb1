"""A real Ray cluster on 127.0.0.1 (``ray start --head``, 2 CPUs): a sweep joins it through
``--address``, experts train on it, and a worker killed mid-cell leaves the sweep's results
identical to an undisturbed run. One cluster for the module, stopped in teardown (only the
processes it started)."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("ray", reason="the `ray` extra is not installed (pip install -e '.[ray]'); .ci/run installs it")

from tests.ray_nodes import Cluster, finish, same_cell, sweep_file  # noqa: E402

DM_CELL = {"pruner": "random", "keep": 0.5, "distiller": "dm", "ipc": 2, "device": "cpu",
           "distiller_options": {"iterations": 4, "batch_real": 16},
           "evaluator_options": {"epochs": 4, "batch": 64}, "eval_repeats": 1}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("ray"))
    try:
        yield c
    finally:
        c.stop()


def test_sweep_joins_the_cluster_through_address(cluster, tmp_path, host):
    from pd_plugins.experiments.sweep import Sweep, run_sweep

    grid = {"seed": [0, 1]}
    sf = sweep_file(tmp_path / "two.yaml", grid, DM_CELL)
    out = tmp_path / "on-ray"
    summary = json.loads(finish(cluster.pd("sweep", sf, "--executor", "ray", "--address", cluster.address,
                                            "--cpus-per-cell", "1", "--json", "--no-progress", "--out", out)))
    assert summary["counts"] == {"done": 2}, summary
    ref = run_sweep(Sweep(name="two", grid=grid, fixed=DM_CELL), tmp_path / "inline", progress=False)
    for cell in ref["cells"]:
        same_cell(tmp_path / "inline" / cell["dir"], out / cell["dir"])
    assert all(c["summary"]["out"] == str(out / c["dir"]) for c in summary["cells"])


def test_experts_train_on_the_cluster_bit_identical(cluster, tmp_path, host, monkeypatch):
    from click.testing import CliRunner

    from pd_plugins.cli import cli

    args = ["experts", "--pruner", "random", "--keep", "0.2", "-D", "experts=3", "-D", "train_epochs=2",
            "-D", "expert_epochs=1", "-D", "max_start_epoch=1", "-D", "expert_batch=64", "--device", "cpu",
            "--no-progress", "--json"]
    on_ray = json.loads(finish(cluster.pd(*args, "--executor", "ray", "--address", cluster.address,
                                           "--out", tmp_path / "e-ray")))
    assert on_ray["trained_now"] == 3
    monkeypatch.setenv("PD_CACHE_DIR", str(tmp_path / "inline-cache"))
    res = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "e-inline")])
    assert res.exit_code == 0, res.output
    inline = json.loads(res.output)
    assert inline["trained_now"] == 3 and Path(inline["experts_dir"]).name == Path(on_ray["experts_dir"]).name
    for i in range(3):
        a, b = (torch.load(Path(d) / f"expert_{i:04d}.pt", weights_only=True)["trajectory"]
                for d in (on_ray["experts_dir"], inline["experts_dir"]))
        assert a.equal(b)


def test_killed_worker_mid_cell_leaves_the_sweep_result_unchanged(cluster, tmp_path, host):
    from pd_plugins.experiments.sweep import run_cell

    cell = {**DM_CELL, "distiller_options": {"iterations": 200, "batch_real": 16}, "checkpoint_every": 10}
    sf = sweep_file(tmp_path / "one.yaml", {"seed": [0]}, cell)
    out = tmp_path / "killed"
    proc = cluster.pd("sweep", sf, "--executor", "ray", "--address", cluster.address, "--json", "--no-progress",
                      "--out", out)
    cdir, lock = out / "cells" / "seed=0", out / "cells" / ".seed=0.lock"
    t0 = time.monotonic()
    while not ((cdir / "checkpoints" / "distill.pt").exists() and lock.exists()):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() - t0 < 300, "the cell never reached its first checkpoint"
        time.sleep(0.05)
    worker = json.loads(lock.read_text())["pid"]
    assert worker != proc.pid  # the cell runs in a Ray worker, not in the driver
    os.kill(worker, signal.SIGKILL)
    killed_before_distill_finished = not (cdir / "distill.pt").exists()
    summary = json.loads(finish(proc))
    assert killed_before_distill_finished
    assert summary["counts"] == {"done": 1}, summary
    ref = tmp_path / "undisturbed"
    assert run_cell({**cell, "seed": 0}, str(ref), False)["status"] == "done"
    same_cell(ref, cdir)

    def logged(run_dir):
        rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if r.get("stage") == "distill"]

    assert logged(cdir) == logged(ref)  # resumed from the checkpoint: each logged iteration once, same losses
