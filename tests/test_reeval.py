"""Re-evaluating a finished run (``pd-run eval RUN -E ...``): a separate, fingerprinted evaluation
beside the run's own eval.json, never overwriting it, and selectable by the report code."""
from __future__ import annotations

import json

import pytest
import torch

from tests.cli_runs import invoke, isolated_cli

MTT_TINY = ["--distiller", "mtt", "--ipc", "1", "--no-progress", "--checkpoint-every", "0", "--model-option", "width=16",
            "-D", "iterations=3", "-D", "syn_steps=2", "-D", "expert_epochs=1", "-D", "max_start_epoch=1",
            "-D", "train_epochs=2", "-D", "experts=1", "-D", "expert_batch=64", "-D", "lr_lr=1e-3",
            "-E", "epochs=4", "--eval-repeats", "2"]


@pytest.fixture(scope="module")
def mtt_run(tmp_path_factory):
    """A finished tiny MTT run on digits (its learned lr differs from 0.01)."""
    root = tmp_path_factory.mktemp("reeval")
    with isolated_cli(root):
        res = invoke(*MTT_TINY, "--out", root / "run")
        assert res.exit_code == 0, res.stderr + res.output
    return root / "run"


def _snapshot(run):
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "manifest.json"}


def test_fixed_lr_reevaluation_is_separate_and_fingerprinted(host, mtt_run):
    before = _snapshot(mtt_run)
    stages_before = json.loads((mtt_run / "manifest.json").read_text())["stages"]
    res = invoke("eval", mtt_run, "-E", "use_learned_lr=false", "--json", "--no-progress")
    assert res.exit_code == 0, res.stderr + res.output
    summary = json.loads(res.output)
    learned = torch.load(mtt_run / "distill.pt", weights_only=True)["lr"]
    own = json.loads((mtt_run / "eval.json").read_text())["results"][0]
    assert own["options"]["lr_used"] == pytest.approx(learned) and abs(learned - 0.01) > 1e-4
    assert summary["lr_used"] == 0.01 and summary["run_eval_lr_used"] == pytest.approx(learned)

    path = mtt_run / summary["evaluation"].split(str(mtt_run) + "/")[-1]
    payload = json.loads(path.read_text())
    assert path.parent.name == "evals" and path.name == f"dsa-step-{payload['fingerprint'][:12]}.json"
    res0 = payload["results"][0]
    assert res0["options"]["lr_used"] == 0.01 and res0["options"]["lr_source"] == "option"
    assert payload["options"]["use_learned_lr"] is False and payload["options"]["epochs"] == 4  # the run's other options
    assert len(res0["accs"]) == 2  # the run's eval_repeats
    assert payload["artifact"]["fingerprint"] == torch.load(mtt_run / "distill.pt", weights_only=True)["fingerprint"]
    # the run's own evaluation and its stages are untouched
    assert _snapshot(mtt_run) == before
    man = json.loads((mtt_run / "manifest.json").read_text())
    assert man["stages"] == stages_before
    assert man["evaluations"][f"evals/{path.name}"]["fingerprint"] == payload["fingerprint"]

    # an identical re-evaluation is refused without --overwrite, and left as it was
    text = path.read_text()
    again = invoke("eval", mtt_run, "-E", "use_learned_lr=false", "--no-progress")
    assert again.exit_code == 1 and again.stderr.startswith("Error:") and "--overwrite" in again.stderr
    assert path.read_text() == text
    redo = invoke("eval", mtt_run, "-E", "use_learned_lr=false", "--overwrite", "--json", "--no-progress")
    assert redo.exit_code == 0, redo.stderr
    assert json.loads(path.read_text())["results"][0]["accs"] == res0["accs"]  # seeded: the same networks

    # other settings: another fingerprint, another file
    other = invoke("eval", mtt_run, "-E", "use_learned_lr=false", "-E", "epochs=2", "--json", "--no-progress")
    assert other.exit_code == 0, other.stderr
    assert json.loads(other.output)["evaluation"] != summary["evaluation"]
    assert len(list((mtt_run / "evals").iterdir())) == 2


def test_same_settings_reproduce_the_runs_own_networks(host, mtt_run):
    """Variant networks are seeded like the run's own: with the run's settings the accuracies are equal."""
    from pd_plugins.experiments.reeval import evaluate_variant

    payload = evaluate_variant(mtt_run, evaluator="mtt-step-lr", options={"epochs": 4})
    own = json.loads((mtt_run / "eval.json").read_text())["results"][0]
    assert payload["results"][0]["options"]["lr_used"] == own["options"]["lr_used"]
    assert payload["results"][0]["accs"] == own["accs"]
    assert payload["evaluator"] == "mtt-step-lr"


def test_report_code_selects_a_reevaluation(host, mtt_run):
    from pd_plugins.errors import DataError
    from pd_plugins.experiments.reeval import evaluate_variant, read_evaluation

    fixed = evaluate_variant(mtt_run, options={"use_learned_lr": False, "epochs": 3})
    evaluate_variant(mtt_run, options={"use_learned_lr": False, "epochs": 5})
    glad = evaluate_variant(mtt_run, evaluator="glad-ema-cosine", options={"epochs": 2})
    assert read_evaluation(mtt_run)["results"] == json.loads((mtt_run / "eval.json").read_text())["results"]
    assert read_evaluation(mtt_run, {"options": {"use_learned_lr": "false", "epochs": "3"}}) == fixed
    assert read_evaluation(mtt_run, {"evaluator": "glad-ema-cosine"}) == glad
    assert read_evaluation(mtt_run, {"options": {"epochs": 17}}) is None
    with pytest.raises(DataError, match="match"):  # several fixed-lr evaluations: say which
        read_evaluation(mtt_run, {"evaluator": "dsa-step", "options": {"use_learned_lr": False}})


def test_report_collect_reads_the_selected_evaluation(host, mtt_run, tmp_path):
    """A sweep cell's row takes its accuracy from the selected re-evaluation."""
    import shutil

    from pd_plugins.experiments.reeval import evaluate_variant
    from pd_plugins.experiments.report import collect, write_report

    sweep = tmp_path / "sweep"
    shutil.copytree(mtt_run, sweep / "cells" / "c0")
    (sweep / "sweep.json").write_text(json.dumps({"name": "s", "grid": {}, "fixed": {}, "counts": {"done": 1},
                                                  "cells": [{"id": "c0", "dir": "cells/c0", "axes": {}}]}))
    sel = {"options": {"use_learned_lr": False, "epochs": 1}}
    with pytest.raises(Exception, match="no finished cells with an evaluation matching"):
        collect(sweep, sel)
    payload = evaluate_variant(sweep / "cells" / "c0", options={"use_learned_lr": False, "epochs": 1})
    [row] = collect(sweep, sel)
    assert row["acc"] == payload["results"][0]["mean"]
    [own] = collect(sweep)
    assert own["acc"] == json.loads((sweep / "cells" / "c0" / "eval.json").read_text())["results"][0]["mean"]
    rep = write_report(sweep, sel)
    assert rep["dir"].endswith("report-use_learned_lr=false_epochs=1")
    res = invoke("report", sweep, "-E", "use_learned_lr=false", "-E", "epochs=1")
    assert res.exit_code == 0, res.stderr
    assert "re-evaluation use_learned_lr=false epochs=1" in res.output


def test_reevaluation_flags(host, mtt_run, tmp_path):
    res = invoke("eval", mtt_run, "-E", "use_learned_lr=false", "--models", "convnet")
    assert res.exit_code == 2 and "--models" in res.output
    res = invoke("eval", mtt_run, "--evaluator", "glad-ema-cosine", "-E", "use_learned_lr=false")
    assert res.exit_code == 1 and "use_learned_lr" in res.stderr  # not an option of GLaD's protocol
    res = invoke("eval", mtt_run, "--seed", "3")
    assert res.exit_code == 2 and "--images only" in res.output
    res = invoke("eval", tmp_path / "nothing", "-E", "epochs=2")
    assert res.exit_code == 1 and "nothing" in res.stderr
