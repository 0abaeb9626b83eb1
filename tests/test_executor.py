"""The executor seam: the same results inline and in a process pool, clear errors, and cells
that run on a node without the sweep's filesystem bring their folder back."""
from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest
import torch

from pd_plugins.errors import OptionsError
from pd_plugins.executor import INLINE, LocalExecutor, Resources, make_executor

TINY_CELL = {"pruner": "random", "keep": 0.5, "distiller": "dm", "ipc": 2,
             "distiller_options": {"iterations": 6, "batch_real": 16}, "checkpoint_every": 2,
             "evaluator_options": {"epochs": 4, "batch": 64}, "eval_repeats": 2}


def test_executor_choices_fail_clearly(monkeypatch):
    with pytest.raises(OptionsError, match="unknown executor 'dask'"):
        make_executor("dask")
    with pytest.raises(OptionsError, match="--address needs --executor ray"):
        make_executor("local", address="10.0.0.1:6379")
    with pytest.raises(OptionsError, match="does not place tasks on GPUs"):
        make_executor("local", workers=2, resources=Resources(gpus=1))
    with pytest.raises(OptionsError, match="must be positive"):
        Resources(cpus=0)
    assert make_executor("local", workers=1) is not None and make_executor("local", workers=1).kind == "none"
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    with pytest.raises(OptionsError, match=r"needs Ray: pip install 'pd-plugins\[ray\]'"):
        make_executor("ray")


def test_inline_map_raises_or_returns_task_errors():
    def boom(x):
        if x == 2:
            raise ValueError("two")
        return x * 10

    assert dict(INLINE.map(boom, [(1, (1,)), (3, (3,))])) == {1: 10, 3: 30}
    with pytest.raises(ValueError, match="two"):
        dict(INLINE.map(boom, [(2, (2,))]))
    got = dict(INLINE.map(boom, [(2, (2,)), (4, (4,))], return_exceptions=True))
    assert isinstance(got[2], ValueError) and got[4] == 40


@pytest.fixture(scope="module")
def pool():
    ex = LocalExecutor(2, Resources(threads=1))
    yield ex
    ex.close()


def test_stage_tasks_in_a_process_pool_match_the_sequential_path(tmp_path, digits_splits, pool):
    """Experts, scorers and evaluation repeats: bit-identical in two spawned workers and inline."""
    from pd_plugins.pipeline.context import RunContext
    from pd_plugins.training.evaluate import StepEvaluator
    from pd_plugins.distillation.experts import ExpertRecipe, ensure_experts, load_trajectory
    from pd_plugins.pruning.scoring import ScorerRecipe, score_dataset

    data = digits_splits.train.subset(list(range(0, 1400, 5)))
    recipe = ExpertRecipe(epochs=2, batch=64)
    out = {}
    for name, ex in (("inline", None), ("pool", pool)):
        ctx = RunContext(seed=3, cache_dir=tmp_path / name, stage="distill", executor=ex)
        directory, trained = ensure_experts(data, ctx, recipe, 3)
        assert trained == 3
        trajs = [load_trajectory(directory, i) for i in range(3)]
        scores, meta = score_dataset(data, replace(ctx, stage="prune"), ScorerRecipe(epochs=1, batch=64),
                                     stat="el2n", runs=2, purpose="t")
        assert meta["cache"] == "miss"
        ev = StepEvaluator(StepEvaluator.resolve_options({"epochs": 2, "batch": 64, "repeats": 3}))
        res = ev.evaluate(data, digits_splits.test, replace(ctx, stage="eval"))
        out[name] = (trajs, scores, res.accs, res.meta["final_train_loss"])
    (t_in, s_in, a_in, l_in), (t_pool, s_pool, a_pool, l_pool) = out["inline"], out["pool"]
    assert all(a.equal(b) for a, b in zip(t_in, t_pool))
    assert not t_in[0].equal(t_in[1])  # each expert its own seed
    assert s_in.equal(s_pool)
    assert a_in == a_pool and l_in == l_pool and len(set(l_in)) == 3


_SHARE_EXPERTS = """
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from pd_plugins.data.builtin import digits
from pd_plugins.distillation.experts import ExpertRecipe, ensure_experts
from pd_plugins.pipeline.context import RunContext
cache, go = Path(sys.argv[1]), Path(sys.argv[2])
data = digits(None).train.subset(list(range(600)))
while not go.exists():
    time.sleep(0.01)
_, trained = ensure_experts(data, RunContext(seed=3, cache_dir=cache, stage="distill"), ExpertRecipe(epochs=2, batch=32), 6)
print(json.dumps(trained))
"""


def test_processes_sharing_a_cache_split_an_expert_buffer(tmp_path):
    """Two inline processes that need the same buffer train part of it each, and no expert twice."""
    import subprocess

    from pd_plugins.distillation.experts import ExpertRecipe, ensure_experts, load_trajectory
    from pd_plugins.data.builtin import digits
    from pd_plugins.pipeline.context import RunContext

    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _SHARE_EXPERTS, str(tmp_path / "shared"), str(go)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    go.touch()
    counts = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(counts) == 6 and min(counts) >= 1, counts
    data = digits(None).train.subset(list(range(600)))
    ctx = RunContext(seed=3, cache_dir=tmp_path / "shared", stage="distill")
    directory, trained = ensure_experts(data, ctx, ExpertRecipe(epochs=2, batch=32), 6)
    assert trained == 0  # all six are in the cache
    alone, _ = ensure_experts(data, replace(ctx, cache_dir=tmp_path / "alone"), ExpertRecipe(epochs=2, batch=32), 2)
    assert all(load_trajectory(directory, i).equal(load_trajectory(alone, i)) for i in range(2))


def test_cell_on_a_node_without_the_sweep_filesystem_brings_its_folder_back(tmp_path, host):
    """A cell whose worker cannot see OUT runs node-locally from the driver's partial copy, and its
    finished folder replaces that copy atomically; the result equals a cell run in place."""
    from pd_plugins.experiments.sweep import _install_cell, remote_cell, run_cell
    from pd_plugins.transfer import pack_dir

    ref = tmp_path / "ref"
    assert run_cell(TINY_CELL, str(ref), False)["status"] == "done"

    cdir = tmp_path / "sweep" / "cells" / "c"
    marker = tmp_path / "sweep" / ".sweep-token"
    marker.parent.mkdir(parents=True)
    marker.write_text("driver-token\n")
    # the driver holds a partial folder: the prune stage finished, then the node running it died
    assert run_cell(TINY_CELL, str(cdir), False)["status"] == "done"
    man = json.loads((cdir / "manifest.json").read_text())
    (cdir / "manifest.json").write_text(json.dumps({**man, "stages": {"prune": man["stages"]["prune"]}}))
    for name in ("distill.pt", "eval.json", "log.jsonl", "synthetic.png"):
        (cdir / name).unlink()

    rec = remote_cell(TINY_CELL, str(cdir), False, str(marker), "another-node", pack_dir(cdir))
    assert rec["status"] == "done" and rec["shipped_back"], rec
    assert not (cdir / "distill.pt").exists()  # nothing written in place by the "remote" node
    _install_cell(rec, cdir)
    assert "folder" not in rec and rec["summary"]["out"] == str(cdir)
    assert json.loads((cdir / "config.json").read_text())["out"] == str(cdir)
    # resumed from the shipped copy: its prune stage was kept, not redone
    assert json.loads((cdir / "manifest.json").read_text())["stages"]["prune"] == man["stages"]["prune"]
    a = torch.load(ref / "distill.pt", weights_only=True)["images"]
    b = torch.load(cdir / "distill.pt", weights_only=True)["images"]
    assert a.equal(b)
    evals = [json.loads((d / "eval.json").read_text())["results"] for d in (cdir, ref)]
    assert evals[0] == evals[1]
    assert sorted(p.name for p in cdir.parent.iterdir()) == ["c"]  # no temporaries left beside it

    # where the worker does see OUT (shared filesystem) the cell runs in place
    shared = tmp_path / "sweep" / "cells" / "d"
    rec = remote_cell(TINY_CELL, str(shared), False, str(marker), "driver-token", None)
    assert rec["status"] == "done" and "folder" not in rec and (shared / "eval.json").exists()
    assert rec["shipped_back"] is False
