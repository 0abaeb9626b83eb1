"""DD-Ranking's robust scores (HLR, IOR, LRS, ARS): the formulas against hand computations, their scale and
neutral value, and ``pd-run eval RUN --metrics`` on a finished tiny digits run (stored, reused, refused)."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from pd_plugins.experiments import robust_scores as rs
from tests.cli_runs import invoke, isolated_cli

E, INV_E = 2.718281828459045, 0.36787944117144233  # e and e^-1, written out


# ------------------------------------------------------------------------------------------------
# the formulas


def test_exp_normalisation_maps_minus_one_zero_one_to_zero_neutral_one():
    assert rs.exp_normalise(-1.0) == pytest.approx(0.0, abs=1e-12)
    assert rs.exp_normalise(1.0) == pytest.approx(1.0)
    # neutral: (1 - e^-1) / (e - e^-1) = 0.63212056 / 2.35040239 = 0.26894142
    assert rs.NEUTRAL == pytest.approx(0.26894142, abs=1e-8)
    assert rs.exp_normalise(0.0) == pytest.approx(rs.NEUTRAL)


def test_hlr_ior_lrs_match_a_hand_computation():
    real_hard, syn_hard = [0.90, 0.92], [0.60, 0.64]
    syn_any, rdm_any = [0.70, 0.66], [0.62, 0.60]
    hlr = rs.hard_label_recovery(real_hard, syn_hard)
    ior = rs.improvement_over_random(syn_any, rdm_any)
    assert hlr == pytest.approx([0.30, 0.28])
    assert ior == pytest.approx([0.08, 0.06])
    # w = 0.5: alpha = 0.5 * 0.08 - 0.5 * 0.30 = -0.11 (network 0), 0.5 * 0.06 - 0.5 * 0.28 = -0.11 (network 1)
    # LRS = (e^-0.11 - e^-1) / (e - e^-1) = 0.52795469 / 2.35040239 = 0.22462311
    lrs = rs.label_robust_score(hlr, ior, w=0.5)
    assert lrs == pytest.approx([0.22462311, 0.22462311], abs=1e-7)
    # w = 0.8: alpha_0 = 0.8 * 0.08 - 0.2 * 0.30 = 0.004 -> (1.00400801 - 0.36787944) / 2.35040239 = 0.27064667
    #          alpha_1 = 0.8 * 0.06 - 0.2 * 0.28 = -0.008 -> (0.99203191 - 0.36787944) / 2.35040239 = 0.26555133
    assert rs.label_robust_score(hlr, ior, w=0.8) == pytest.approx([0.27064667, 0.26555133], abs=1e-7)
    # the extremes of w keep one term: w = 1 scores IOR alone, w = 0 scores -HLR alone
    assert rs.label_robust_score(hlr, ior, w=1.0) == pytest.approx((np.exp(ior) - INV_E) / (E - INV_E))
    assert rs.label_robust_score(hlr, ior, w=0.0) == pytest.approx((np.exp(-hlr) - INV_E) / (E - INV_E))


def test_ars_matches_a_hand_computation():
    # beta = 0.5 * (0.55 - 0.50) + 0.5 * (0.40 - 0.38) = 0.035
    # ARS = (e^0.035 - e^-1) / (e - e^-1) = (1.03561971 - 0.36787944) / 2.35040239 = 0.28409615
    assert rs.augmentation_robust_score([0.55], [0.50], [0.40], [0.38]) == pytest.approx([0.28409615], abs=1e-7)
    # gamma = 1 keeps only the augmented difference: beta = 0.05 -> (1.05127110 - 0.36787944) / 2.35040239 = 0.29075517
    assert rs.augmentation_robust_score([0.55], [0.50], [0.40], [0.38], gamma=1.0) == pytest.approx(
        [0.29075517], abs=1e-7)


def test_a_set_equal_to_its_random_baseline_scores_the_neutral_value():
    rdm_aug, rdm_naug = [0.51, 0.47, 0.49], [0.40, 0.43, 0.38]
    ars = rs.augmentation_robust_score(rdm_aug, rdm_aug, rdm_naug, rdm_naug, gamma=0.3)
    assert ars == pytest.approx([rs.NEUTRAL] * 3)
    assert rs.improvement_over_random(rdm_aug, rdm_aug) == pytest.approx([0.0] * 3)
    # LRS also weighs HLR: a set equal to random *and* to the real pool is neutral; one that only
    # equals random scores below neutral by exactly the HLR it leaves
    assert rs.label_robust_score([0.0], [0.0]) == pytest.approx([rs.NEUTRAL])
    assert rs.label_robust_score([0.2], [0.0], w=0.5) == pytest.approx(rs.exp_normalise(-0.1))
    assert rs.label_robust_score([0.2], [0.0])[0] < rs.NEUTRAL


def test_the_scale_is_fractions_not_percent():
    # DD-Ranking's code feeds accuracies in percent into e^alpha: HLR = 30 pp, IOR = 2 pp give alpha = -14,
    # a "score" of (e^-14 - e^-1) / (e - e^-1) < 0, outside [0, 1]; here such input is refused
    assert float(rs.exp_normalise(0.5 * 2.0 - 0.5 * 30.0)) < 0.0
    with pytest.raises(ValueError, match="fractions"):
        rs.hard_label_recovery([90.0], [60.0])
    with pytest.raises(ValueError, match="percentage points"):
        rs.label_robust_score([30.0], [2.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rs.label_robust_score([0.3], [0.02], w=1.5)
    with pytest.raises(ValueError, match="paired"):
        rs.improvement_over_random([0.5, 0.6], [0.5])


def test_scores_are_per_network_then_mean_and_sample_std():
    accs = {"real_hard": [0.9, 0.9], "syn_hard": [0.5, 0.7], "syn_any": [0.6, 0.6], "rdm_any": [0.5, 0.6]}
    out = rs.scores(accs, ["hlr", "ior", "lrs"])
    assert out["hlr"]["values"] == pytest.approx([0.4, 0.2])
    assert out["hlr"]["mean"] == pytest.approx(0.3) and out["hlr"]["std"] == pytest.approx(math.sqrt(0.02))
    per_net = [rs.exp_normalise(0.5 * 0.1 - 0.5 * 0.4), rs.exp_normalise(0.5 * 0.0 - 0.5 * 0.2)]
    assert out["lrs"]["values"] == pytest.approx(per_net)
    assert out["lrs"]["mean"] == pytest.approx(np.mean(per_net))  # the mean of LRS, not LRS of the means
    assert rs.mean_std([0.3]) == (0.3, 0.0)
    with pytest.raises(ValueError, match="need the accuracy terms"):
        rs.scores({"syn_any": [0.5]}, ["ior"])


# ------------------------------------------------------------------------------------------------
# pd-run eval RUN --metrics

TINY = ["--pruner", "random", "--keep", "0.5", "--distiller", "dm", "--ipc", "2", "-D", "iterations=3",
        "-E", "epochs=2", "--eval-repeats", "2", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished tiny DM run on digits, with its own cache directory (kept for the module's tests)."""
    root = tmp_path_factory.mktemp("robust")
    with isolated_cli(root):
        res = invoke(*TINY, "--out", root / "run")
        assert res.exit_code == 0, res.stderr + res.output
        yield root / "run"


def _evaluations(monkeypatch):
    """Count the networks trained from here on."""
    from pd_plugins.training import evaluate

    calls = []
    real = evaluate._step_repeat

    def counting(*args):
        calls.append(args[-1])
        return real(*args)

    monkeypatch.setattr(evaluate, "_step_repeat", counting)
    return calls


def test_metrics_command_prints_the_four_scores_and_stores_them(host, tiny_run, monkeypatch):
    calls = _evaluations(monkeypatch)
    res = invoke("eval", tiny_run, "--metrics", "robust", "--no-progress")
    assert res.exit_code == 0, res.stderr + res.output
    for name in ("HLR", "IOR", "LRS", "ARS", "Acc_real-hard", "Acc_rdm-naug"):
        assert name in res.output
    stored = sorted((tiny_run / "robust").glob("robust-*.json"))
    assert len(stored) == 1
    payload = json.loads(stored[0].read_text())
    terms = payload["terms"]
    # DM's labels are hard: syn-hard, syn-any and syn-aug (dsa-step augments) are one set of networks,
    # as are rdm-any and rdm-aug: 2 networks x (real, syn, rdm, syn-naug, rdm-naug)
    assert len(calls) == 2 * 5
    assert terms["syn_hard"]["accs"] == terms["syn_any"]["accs"] == terms["syn_aug"]["accs"]
    # network r of Acc_syn-any is network r of the run's own evaluation (same settings, same seed)
    own = json.loads((tiny_run / "eval.json").read_text())["results"][0]["accs"]
    assert terms["syn_any"]["accs"] == own
    assert terms["real_hard"]["size"] == 1438 and terms["rdm_any"]["size"] == terms["syn_any"]["size"] == 20
    assert terms["syn_naug"]["augment"] is False and terms["rdm_any"]["augment"] is True
    assert {t["labels"] for t in terms.values()} == {"hard"}
    hlr = np.array(terms["real_hard"]["accs"]) - np.array(terms["syn_hard"]["accs"])
    ior = np.array(terms["syn_any"]["accs"]) - np.array(terms["rdm_any"]["accs"])
    assert payload["scores"]["hlr"]["values"] == pytest.approx(hlr.tolist())
    assert payload["scores"]["ior"]["values"] == pytest.approx(ior.tolist())
    assert payload["scores"]["lrs"]["mean"] == pytest.approx(float(np.mean(rs.exp_normalise(0.5 * ior - 0.5 * hlr))))
    beta = 0.5 * (np.array(terms["syn_aug"]["accs"]) - terms["rdm_aug"]["accs"]) \
        + 0.5 * (np.array(terms["syn_naug"]["accs"]) - terms["rdm_naug"]["accs"])
    assert payload["scores"]["ars"]["mean"] == pytest.approx(float(np.mean(rs.exp_normalise(beta))))
    assert stored[0].relative_to(tiny_run).as_posix() in json.loads((tiny_run / "manifest.json").read_text())[
        "evaluations"]

    # a second call reads the summary back; other weights reuse every network
    calls.clear()
    again = invoke("eval", tiny_run, "--metrics", "robust", "--json", "--no-progress")
    assert again.exit_code == 0 and json.loads(again.output)["stored"] is True and not calls
    weighted = invoke("eval", tiny_run, "--metrics", "lrs", "--lrs-weight", "0.8", "--json", "--no-progress")
    assert weighted.exit_code == 0, weighted.output
    out = json.loads(weighted.output)
    assert not calls and out["stored"] is False and list(out["scores"]) == ["lrs"]
    assert out["scores"]["lrs"]["mean"] == pytest.approx(float(np.mean(rs.exp_normalise(0.8 * ior - 0.2 * hlr))))
    assert json.loads(stored[0].read_text()) == payload  # the first summary is left as it was

    # --overwrite trains every network again and gives the same accuracies (seeded)
    redo = invoke("eval", tiny_run, "--metrics", "hlr", "--overwrite", "--json", "--no-progress")
    assert redo.exit_code == 0 and len(calls) == 2 * 2
    assert json.loads(redo.output)["terms"]["real_hard"]["accs"] == terms["real_hard"]["accs"]


def test_each_term_changes_only_labels_augmentation_and_the_lr_source():
    from pd_plugins.errors import OptionsError
    from pd_plugins.experiments.robust import TERMS, term_options
    from pd_plugins.training.evaluate import GladEvaluator, StepEvaluator

    base = StepEvaluator.Options(epochs=7, labels="own")
    soft_any = term_options(base, TERMS["syn_any"], train_is_soft=True)
    assert soft_any == base  # a soft-labelled set's own labels are the paper's "any"
    assert term_options(base, TERMS["syn_any"], train_is_soft=False).labels == "hard"
    assert term_options(base, TERMS["syn_hard"], train_is_soft=True).labels == "hard"
    real = term_options(base, TERMS["real_hard"], train_is_soft=True)
    assert (real.labels, real.use_learned_lr, real.epochs) == ("hard", False, 7)
    naug = term_options(StepEvaluator.Options(labels="teacher"), TERMS["rdm_naug"], train_is_soft=False)
    assert (naug.labels, naug.augment, naug.use_learned_lr) == ("teacher", False, False)
    assert term_options(GladEvaluator.Options(), TERMS["rdm_aug"], train_is_soft=False).augment is True

    @dataclasses.dataclass(frozen=True)
    class Plain:  # a plugin evaluator's options without labels/augment
        epochs: int = 1

    with pytest.raises(OptionsError, match="lacks"):
        term_options(Plain(), TERMS["syn_naug"], train_is_soft=False)


def test_random_subsets_match_the_class_counts_and_differ_per_network(host, tiny_run):
    from pd_plugins.experiments.finished_run import load_run
    from pd_plugins.experiments.robust import TERMS, RobustEvaluation

    job = RobustEvaluation(load_run(tiny_run), ["ior"])
    first, _ = job.train_set(TERMS["rdm_any"], 0)
    second, lr = job.train_set(TERMS["rdm_any"], 1)
    assert lr is None and first.class_counts() == second.class_counts() == job.syn.class_counts() == [2] * 10
    assert not set(first.index.tolist()) & {-1} and first.index.tolist() != second.index.tolist()
    assert first.index.tolist() == job.train_set(TERMS["rdm_any"], 0)[0].index.tolist()  # seeded by the run


def test_teacher_labels_are_an_evaluator_option(host, tiny_run):
    res = invoke("eval", tiny_run, "--metrics", "ior", "-E", "labels=teacher", "-E", "teacher_epochs=1",
                 "--json", "--no-progress")
    assert res.exit_code == 0, res.stderr + res.output
    payload = json.loads(res.output)
    assert payload["terms"]["syn_any"]["labels"] == payload["terms"]["rdm_any"]["labels"] == "teacher (T=4)"
    assert payload["options"]["labels"] == "teacher"
    assert len(list((tiny_run.parent / "cache" / "teachers").glob("*.pt"))) == 1


def test_runs_and_reevaluations_train_on_teacher_labels(host, tiny_run, tmp_path):
    res = invoke("eval", tiny_run, "-E", "labels=teacher", "-E", "teacher_epochs=1", "--json", "--no-progress")
    assert res.exit_code == 0, res.stderr + res.output
    evaluation = json.loads(next((tiny_run / "evals").glob("dsa-step-*.json")).read_text())
    assert evaluation["results"][0]["options"]["labels_used"] == "teacher (T=4)"
    res = invoke(*TINY, "-E", "labels=teacher", "-E", "teacher_epochs=1", "-E", "teacher_temperature=2",
                 "--out", tmp_path / "run")
    assert res.exit_code == 0, res.stderr + res.output
    own = json.loads((tmp_path / "run" / "eval.json").read_text())["results"][0]
    assert own["options"]["labels_used"] == "teacher (T=2)" and own["options"]["teacher_temperature"] == 2.0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["resolved"]["evaluator_options"]["labels"] == "teacher"


def test_an_evaluation_without_a_teacher_cannot_use_teacher_labels(digits_splits, ctx):
    from pd_plugins.errors import OptionsError
    from pd_plugins.options import as_dict, coerce
    from pd_plugins.training.evaluate import StepEvaluator

    ev = StepEvaluator(coerce(StepEvaluator.Options, {"labels": "teacher", "epochs": 1, "repeats": 1}))
    with pytest.raises(OptionsError, match="needs a teacher"):
        ev.evaluate(digits_splits.train.subset(list(range(20))), digits_splits.test, ctx)
    # the label options are recorded only when set, so runs written before them keep their fingerprints
    assert "labels" not in as_dict(StepEvaluator.Options()) and as_dict(ev.options)["labels"] == "teacher"


def test_bad_metric_flags_are_usage_errors(host, tiny_run):
    bad = invoke("eval", tiny_run, "--metrics", "accuracy")
    assert bad.exit_code == 2 and "--metrics takes robust" in bad.output
    alone = invoke("eval", tiny_run, "--lrs-weight", "0.3")
    assert alone.exit_code == 2 and "applies to --metrics only" in alone.output
    weight = invoke("eval", tiny_run, "--metrics", "lrs", "--lrs-weight", "1.5")
    assert weight.exit_code == 2 and "--lrs-weight" in weight.output
    models = invoke("eval", tiny_run, "--metrics", "lrs", "--models", "convnet")
    assert models.exit_code == 2 and "does not combine" in models.output


def test_sweep_and_report_add_the_robust_columns(host, tmp_path, monkeypatch):
    monkeypatch.setenv("PD_CACHE_DIR", str(tmp_path / "cache"))
    sweep_file = tmp_path / "tiny.yaml"
    sweep_file.write_text(
        "name: tiny\ngrid: {seed: [0, 1]}\n"
        "fixed: {pruner: random, keep: 0.5, distiller: dm, ipc: 2, distiller_options: {iterations: 2},\n"
        "        evaluator_options: {epochs: 1}, eval_repeats: 2}\n")
    out = tmp_path / "sweep"
    res = invoke("sweep", sweep_file, "--out", out, "--metrics", "ior", "--no-progress")
    assert res.exit_code == 0, res.stderr + res.output
    assert res.output.count("robust   ") == 2 and "computed: IOR" in res.output
    cells = sorted((out / "cells").iterdir())
    per_cell = [json.loads(next((c / "robust").glob("robust-*.json")).read_text())["scores"]["ior"]["mean"]
                for c in cells]
    again = invoke("sweep", sweep_file, "--out", out, "--metrics", "ior", "--no-progress")
    assert again.exit_code == 0 and again.output.count("stored: IOR") == 2  # nothing retrained

    rep = invoke("report", out, "--metrics", "ior,lrs")
    assert rep.exit_code == 0, rep.stderr + rep.output
    assert "## Robust scores" in rep.output and "| 0 (2 without) |" in rep.output  # no cell has LRS yet
    rep = invoke("report", out, "--metrics", "ior")
    table = rep.output.split("## Robust scores")[1]
    row = next(line for line in table.splitlines() if line.startswith("| digits"))
    mean, std = np.mean(per_cell), np.std(per_cell, ddof=1)
    assert f"{100 * mean:.2f} ± {100 * std:.2f}" in row and "| 2 | hard |" in row
    csv_text = (out / "report" / "robust.csv").read_text().splitlines()
    assert csv_text[0].endswith("ior_mean,ior_std") and float(csv_text[1].split(",")[-2]) == pytest.approx(mean)
