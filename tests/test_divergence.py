"""A diverged distillation is a recorded outcome: the error and ``diverged.pt`` say which quantity failed, at
which iteration and its last finite value; a sweep keeps the cell as ``diverged`` (not rerun) with the path of
its last finite state; ``pd-run report`` and docs/reproduction.py show it as a row instead of dropping it."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from pd_plugins.errors import DivergenceError

TINY = {"distiller": "dm", "ipc": 1, "model_options": {"width": 8}, "eval_repeats": 1,
        "distiller_options": {"iterations": 4, "batch_real": 16}, "evaluator_options": {"epochs": 3, "batch": 64}}


def _ctx(tmp_path):
    from pd_plugins.pipeline.context import RunContext

    return RunContext(seed=0, device="cpu", work_dir=tmp_path / "run", cache_dir=tmp_path / "cache", stage="distill")


def _loop(tmp_path, metrics_at, total=6):
    """``iterate`` over a counter state; ``metrics_at(it)`` gives each iteration's metrics."""
    from pd_plugins.distillation.synthetic import iterate

    state = {"done": torch.tensor(-1.0)}

    def step(it):
        state["done"] = torch.tensor(float(it))
        return metrics_at(it)

    return iterate(_ctx(tmp_path), total, step, lambda: {"tensors": {"done": state["done"].clone()}},
                   lambda s: state.update(done=s["tensors"]["done"]), desc="toy", log_every=1,
                   watch=("loss", "syn_lr"), positive=("syn_lr",))


def test_guard_names_the_quantity_its_iteration_and_last_finite_value(tmp_path):
    lrs = [0.01, 0.006, 0.002, -0.002, -0.006, -0.01]  # the learned lr crosses zero in iteration 3
    with pytest.raises(DivergenceError) as err:
        _loop(tmp_path, lambda it: {"loss": 1.0 / (it + 1), "syn_lr": lrs[it]})
    rec = err.value.record
    assert (rec["quantity"], rec["reason"], rec["iteration"]) == ("syn_lr", "<= 0", 3)
    assert rec["value"] == pytest.approx(-0.002) and rec["last_value"] == pytest.approx(0.002)
    assert rec["last_iteration"] == 2 and rec["kept_after_iteration"] == 2 and rec["also"] == []
    assert float(err.value.state["tensors"]["done"]) == 2.0  # the state after iteration 2, the last good one
    assert err.value.outcome() == "diverged at it 3 (syn_lr <= 0)"
    msg = str(err.value)
    assert "syn_lr became <= 0 (-0.002) at iteration 3" in msg and "last value 0.002 at iteration 2" in msg

    with pytest.raises(DivergenceError) as err:  # a non-finite loss in the first iteration: nothing earlier to name
        _loop(tmp_path / "nan", lambda it: {"loss": math.nan, "syn_lr": math.nan})
    rec = err.value.record
    assert (rec["quantity"], rec["reason"], rec["iteration"], rec["last_value"]) == ("loss", "non-finite", 0, None)
    assert rec["also"] == ["syn_lr non-finite"] and rec["kept_after_iteration"] == -1
    assert float(err.value.state["tensors"]["done"]) == -1.0  # the initial state
    assert "kept the initial synthetic set" in str(err.value)


def _force_divergence(monkeypatch, at: int = 2, seeds=(1,)):
    """Make the distiller's learned lr -1 in iteration ``at`` of runs with these seeds (0.01 before it).
    Returns what the test checks: the state the loop held before that iteration, and how often it ran."""
    from pd_plugins.distillation import synthetic

    real = synthetic.iterate
    seen = {"calls": 0, "before": {}}

    def iterate(ctx, total, step, get_state, set_state, **kw):
        seen["calls"] += 1
        if ctx.seed not in seeds:
            return real(ctx, total, step, get_state, set_state, **kw)

        def failing(it):
            if it == at:
                seen["before"][ctx.seed] = {k: v.clone() for k, v in get_state()["tensors"].items()}
            return {**step(it), "syn_lr": -1.0 if it == at else 0.01}

        return real(ctx, total, failing, get_state, set_state, **kw)

    monkeypatch.setattr(synthetic, "iterate", iterate)
    return seen


def test_diverged_cell_is_a_sweep_outcome_with_its_last_state_and_a_report_row(tmp_path, host, monkeypatch):
    from pd_plugins.experiments.report import write_report
    from pd_plugins.experiments.sweep import Sweep, run_sweep
    from pd_plugins.io import safe_torch_load

    seen = _force_divergence(monkeypatch)
    sw = Sweep(name="d", grid={"pruner": ["random"], "keep": [0.5], "seed": [0, 1]}, fixed=dict(TINY))
    out = tmp_path / "sw"
    first = run_sweep(sw, out, progress=False)
    assert first["counts"] == {"done": 1, "diverged": 1}, first
    cell = next(c for c in first["cells"] if c["status"] == "diverged")
    assert cell["outcome"] == "diverged at it 2 (syn_lr <= 0)"
    div = cell["divergence"]
    assert (div["quantity"], div["iteration"], div["value"], div["last_value"], div["last_iteration"]) == \
        ("syn_lr", 2, -1.0, 0.01, 1)
    assert cell["kept"] == f"{cell['dir']}/diverged.pt" and "syn_lr became <= 0" in cell["error"]
    saved = safe_torch_load(out / cell["kept"])
    assert torch.equal(saved["images"], seen["before"][1]["images"])  # the last finite synthetic set
    assert saved["divergence"] == div and cell["error"] == f"{saved['error']}; saved to {out / cell['kept']}"
    assert json.loads((out / "sweep.json").read_text())["cells"] == first["cells"]

    calls = seen["calls"]
    again = run_sweep(sw, out, progress=False)  # a recorded outcome: neither cell runs again
    assert again["counts"] == {"skipped": 1, "diverged": 1} and seen["calls"] == calls
    assert next(c for c in again["cells"] if c["status"] == "diverged")["divergence"] == div

    rep = write_report(out)
    assert (rep["cells"], rep["diverged"], rep["settings"]) == (1, 1, 1)
    [group] = rep["groups"]
    assert group["n"] == 1 and group["seeds"] == [0] and group["diverged"] == ["seed 1: diverged at it 2 (syn_lr <= 0)"]
    md = (out / "report" / "report.md").read_text()
    assert "1 finished cells, 1 diverged" in md and "| seed 1: diverged at it 2 (syn_lr <= 0) |" in md
    with open(out / "report" / "cells.csv") as fh:
        rows = {r["seed"]: r for r in csv.DictReader(fh)}
    assert rows["1"]["status"] == "diverged" and rows["1"]["acc"] == "" and rows["0"]["status"] == "done"
    assert rows["1"]["outcome"] == "diverged at it 2 (syn_lr <= 0)" and float(rows["0"]["acc"]) == group["mean"]


def test_reproduction_report_lists_diverged_runs(repro, tmp_path, monkeypatch):
    """docs/reproduction.py: a diverged cell's record keeps its outcome, and the claim and the per-run table say
    where it diverged; a record measured before (status failed, the old message) reads the same way."""
    monkeypatch.setenv("PD_CACHE_DIR", str(tmp_path / "cache"))
    _force_divergence(monkeypatch, seeds=(1,))
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(json.dumps({
        "name": "tiny", "seeds": [0, 1], "datasets": {"digits": {"dataset": "digits"}}, "fixed": TINY,
        "studies": {"prune": {"datasets": ["digits"], "grid": {"pruner": ["random"], "keep": [0.3, 0.6]}}},
        "claims": [{"id": "c1", "study": "prune", "source": "test", "title": "more beats less",
                    "baseline": {"keep": 0.3}, "variant": {"keep": 0.6}, "expect": "higher"}],
    }))
    out_md = tmp_path / "docs" / "reproduction.md"
    args = ["--plan", str(plan_path), "--runs", str(tmp_path / "runs"), "--workers", "1", "--out", str(out_md)]
    assert repro.main(args) == 0
    records = [json.loads(line) for line in (out_md.parent / "reproduction" / "runs.jsonl").read_text().splitlines()]
    diverged = sorted((r for r in records if r["status"] == "diverged"), key=lambda r: r["axes"]["keep"])
    assert [(r["seed"], r["axes"]["keep"]) for r in diverged] == [(1, 0.3), (1, 0.6)]
    for r in diverged:
        assert r["outcome"] == "diverged at it 2 (syn_lr <= 0)" and r["divergence"]["last_value"] == 0.01
        assert (tmp_path / "runs" / "prune" / "digits" / r["kept"]).exists() and r["acc"] is None
    text = out_md.read_text()
    assert "2 finished runs, 2 diverged" in text
    assert "baseline diverged in 1 run(s): seed 1 diverged at it 2 (syn_lr <= 0)" in text
    assert text.count("| 1 | diverged at it 2 (syn_lr <= 0) | – |") == 2  # one per arm in the per-run table

    # a record from before diverged cells had a status of their own
    old = {**diverged[0], "status": "failed", "error": "mtt: syn_lr became non-finite (or non-positive) at iteration "
           "11; kept the last finite synthetic set (lower the image/lr learning rates)"}
    for key in ("outcome", "divergence", "kept"):
        old.pop(key)
    assert repro.outcome_of(old) == "diverged at it 11 (syn_lr non-finite or <= 0)"
    assert repro.outcome_of({**old, "error": "distiller 'dm' failed: boom"}) == "failed"
