"""Cross-architecture evaluation: per-(model, repeat) cache, seeding, unseen-architecture mean."""
from __future__ import annotations

import json
import statistics

import pytest

from pd_plugins.errors import DataError, UnknownNameError


@pytest.fixture
def pruned_run(tmp_path, host):
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.runner import Run

    cfg = RunConfig(pruner="random", keep=0.2, distiller="none", evaluator_options={"epochs": 1, "batch": 128},
                    eval_repeats=1, model_options={"width": 16}, out=str(tmp_path / "run"), progress=False)
    Run(cfg).execute()
    return tmp_path / "run"


def test_cross_eval_caches_each_repeat_and_reports_unseen_mean(pruned_run, monkeypatch):
    from pd_plugins.experiments import crosseval

    calls = []
    real = crosseval._one_repeat
    monkeypatch.setattr(crosseval, "_one_repeat", lambda *a: calls.append(a[-2:]) or real(*a))
    crosseval.eval_run_dir(pruned_run, ["convnet", "alexnet"], 1)
    first = crosseval.eval_run_dir(pruned_run, ["convnet", "alexnet"], 2)  # adds repeat 1 only
    assert sorted(calls) == [("alexnet", 0), ("alexnet", 1), ("convnet", 0), ("convnet", 1)]
    cross = first["cross_arch"]
    assert list(cross["models"]) == ["convnet", "alexnet"] and cross["unseen"] == ["alexnet"]
    assert cross["unseen_mean"] == pytest.approx(cross["models"]["alexnet"]["mean"])
    assert first["results"][0]["model"] == "convnet"  # the run's own model stays first
    for v in cross["models"].values():
        assert len(v["accs"]) == 2 and v["mean"] == pytest.approx(statistics.fmean(v["accs"]))
        assert v["std"] == pytest.approx(statistics.stdev(v["accs"]))
    assert sorted(p.name for p in (pruned_run / "eval").iterdir()) == [
        "alexnet-0.json", "alexnet-1.json", "convnet-0.json", "convnet-1.json"]
    on_disk = json.loads((pruned_run / "eval.json").read_text())
    assert on_disk["cross_arch"]["models"]["alexnet"]["accs"] == cross["models"]["alexnet"]["accs"]
    assert "| unseen mean |" in (pruned_run / "eval.md").read_text()
    assert (pruned_run / "eval.csv").read_text().splitlines()[0] == "model,mean,std,n,note"

    # a rerun trains nothing; a deleted cache file is the only network retrained, with the same result
    calls.clear()
    again = crosseval.eval_run_dir(pruned_run, ["convnet", "alexnet"], 2)
    assert calls == [] and again["cross_arch"] == cross
    (pruned_run / "eval" / "alexnet-1.json").unlink()
    third = crosseval.eval_run_dir(pruned_run, ["convnet", "alexnet"], 2)
    assert calls == [("alexnet", 1)]
    assert third["cross_arch"] == cross


def test_single_repeat_is_seeded_like_a_full_evaluation(pruned_run):
    """Repeat r alone gives the same network as repeat r of an N-repeat evaluation."""
    from pd_plugins.pipeline.runner import Run, load_run_config

    run = Run(load_run_config(pruned_run))
    pruned = run.run_prune(run.data().train.fingerprint())
    train = pruned.apply(run.data().train)
    ctx = run.context("eval")
    full = run.evaluator.evaluate(train, run.data().test, ctx, repeats=2)
    one = run.evaluator.evaluate(train, run.data().test, ctx, repeats=1, repeat_index=1)
    assert one.accs == [full.accs[1]]


def test_cross_eval_errors(pruned_run, tmp_path):
    from pd_plugins.experiments.crosseval import eval_run_dir

    with pytest.raises(UnknownNameError):
        eval_run_dir(pruned_run, ["convnett"], 1)
    with pytest.raises(DataError, match="not a run directory"):
        eval_run_dir(tmp_path / "nothing", ["convnet"], 1)


def test_repeats_per_model_keep_the_runs_own_evaluation(pruned_run, monkeypatch):
    """{model: n}: the home model keeps its eval stage's networks (bit-identical), others train fewer."""
    from pd_plugins.experiments import crosseval

    own = json.loads((pruned_run / "eval.json").read_text())["results"][0]["accs"]
    calls = []
    real = crosseval._one_repeat
    monkeypatch.setattr(crosseval, "_one_repeat", lambda *a: calls.append(a[-2:]) or real(*a))
    payload = crosseval.eval_run_dir(pruned_run, ["convnet", "alexnet"], {"convnet": len(own), "alexnet": 2})
    assert sorted(calls) == [("alexnet", 0), ("alexnet", 1)] + [("convnet", r) for r in range(len(own))]
    assert payload["cross_arch"]["models"]["convnet"]["accs"] == own
    assert len(payload["cross_arch"]["models"]["alexnet"]["accs"]) == 2
    with pytest.raises(Exception, match="must be >= 1"):
        crosseval.eval_run_dir(pruned_run, ["convnet"], {"convnet": 0})
