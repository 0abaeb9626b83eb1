"""Sweeps: grid expansion, skip/resume/failure per cell, the process pool and the report."""
from __future__ import annotations

import csv
import json
import statistics

import pytest

from pd_plugins.errors import OptionsError
from pd_plugins.experiments.sweep import Sweep, run_sweep

TINY = {"distiller": "dm", "ipc": 2, "distiller_options": {"iterations": 2, "batch_real": 16},
        "evaluator_options": {"epochs": 20, "batch": 64}, "eval_repeats": 1}


def test_grid_expands_collapses_unpruned_and_nests_dotted_keys():
    sw = Sweep(name="g", grid={"pruner": ["random", "none"], "keep": [0.3, 0.6], "seed": [0, 1],
                               "pruner_options.balanced": [True]}, fixed=dict(TINY))
    cells = sw.cells()
    ids = [c["id"] for c in cells]
    assert len(cells) == 4 + 2  # random: 2 keeps x 2 seeds; none: keep/options do not apply -> 2 seeds
    assert len(set(ids)) == len(ids)
    rnd = next(c for c in cells if c["axes"].get("keep") == 0.6 and c["axes"]["seed"] == 1)
    assert rnd["config"]["pruner_options"] == {"balanced": True}
    assert rnd["config"]["distiller_options"] == TINY["distiller_options"]
    none = [c for c in cells if c["axes"]["pruner"] == "none"]
    assert all("keep" not in c["config"] and "pruner_options" not in c["config"] for c in none)
    with pytest.raises(OptionsError, match="not a run config key"):
        Sweep(name="bad", grid={"kep": [0.1]}).cells()


def _sweep_lifecycle(out, fixed, fail_keep, fail_msg):
    """Run a 2 pruner x 2 keep x 2 seed sweep, rerun, resume a killed cell, add failing cells, report."""
    grid = {"pruner": ["random", "none"], "keep": [0.3, 0.6], "seed": [0, 1]}
    sw = Sweep(name="t", grid=grid, fixed=dict(fixed))
    first = run_sweep(sw, out, progress=False)
    assert first["counts"] == {"done": 6}, first
    again = run_sweep(sw, out, progress=False)
    assert again["counts"] == {"skipped": 6}
    assert all("summary" in c for c in again["cells"])  # the finishing run's record survives a skip

    # "kill" one cell before its eval stage finished; only that cell reruns, from its saved stages
    victim = out / first["cells"][0]["dir"]
    acc_before = json.loads((victim / "eval.json").read_text())["results"][0]["mean"]
    man = json.loads((victim / "manifest.json").read_text())
    del man["stages"]["eval"]
    (victim / "manifest.json").write_text(json.dumps(man))
    (victim / "eval.json").unlink()
    resumed = run_sweep(sw, out, progress=False)
    assert resumed["counts"] == {"done": 1, "skipped": 5}
    assert resumed["cells"][0]["status"] == "done"
    assert resumed["cells"][0]["summary"]["seconds"].get("distill", 0) < 1.0  # not redone
    assert json.loads((victim / "eval.json").read_text())["results"][0]["mean"] == pytest.approx(acc_before)

    # failing cells are recorded and do not stop the others
    sw2 = Sweep(name="t", grid={**grid, "keep": [0.3, 0.6, fail_keep]}, fixed=dict(fixed))
    mixed = run_sweep(sw2, out, progress=False)
    assert mixed["counts"] == {"skipped": 6, "failed": 2}
    failed = [c for c in mixed["cells"] if c["status"] == "failed"]
    assert all(fail_msg in c["error"] for c in failed), failed

    from scipy import stats

    from pd_plugins.experiments.report import write_report

    rep = write_report(out)
    rdir = out / "report"
    for name in ("report.md", "report.csv", "cells.csv", "acc_vs_keep.png", "pruned_vs_unpruned.png"):
        assert (rdir / name).stat().st_size > 0, name
    assert not (rdir / "el2n_window.png").exists()  # no windowed pruner in this sweep
    with open(rdir / "report.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 3 and rep["settings"] == 3  # unpruned, keep 0.3, keep 0.6 (failed cells: no eval)

    def accs_of(pruner, keep):
        return [json.loads((out / c["dir"] / "eval.json").read_text())["results"][0]["mean"]
                for c in mixed["cells"] if c["status"] != "failed" and c["axes"]["pruner"] == pruner
                and (pruner == "none" or c["axes"]["keep"] == keep)]

    base = accs_of("none", None)
    for row in table:
        accs = accs_of(row["pruner"], float(row["keep"]))
        assert len(accs) == 2
        assert float(row["mean"]) == pytest.approx(statistics.fmean(accs))
        if row["pruner"] != "none":
            assert float(row["delta"]) == pytest.approx(statistics.fmean(accs) - statistics.fmean(base))
            p = stats.ttest_ind(accs, base, equal_var=False).pvalue
            assert (row["p_value"] == "") if p != p else float(row["p_value"]) == pytest.approx(p)


def test_sweep_lifecycle_prune_only(tmp_path, host):
    """Fast: prune-only cells evaluated for 2 epochs."""
    _sweep_lifecycle(tmp_path / "sw", {"distiller": "none", "model_options": {"width": 16},
                                        "evaluator_options": {"epochs": 2}, "eval_repeats": 1},
                     0.001, "selection keeps 0 of")


@pytest.mark.slow
def test_sweep_lifecycle_with_dm(tmp_path, host):
    """The issue's sweep: 2 pruners x 2 keep ratios x DM x 2 seeds on digits, tiny settings."""
    _sweep_lifecycle(tmp_path / "sw", TINY, 0.01, "ipc 2 is larger than the smallest class")


@pytest.mark.slow  # spawning workers that import torch takes ~20 s on a loaded 2-core box
def test_process_pool_runs_cells_in_spawned_workers(tmp_path):
    sw = Sweep(name="pool", grid={"seed": [0, 1]},
               fixed={"pruner": "random", "keep": 0.5, "distiller": "none", "evaluator": "none"})
    res = run_sweep(sw, tmp_path / "p", workers=2, threads=1, progress=False)
    assert res["counts"] == {"done": 2}, res
    kept = [json.loads((tmp_path / "p" / c["dir"] / "manifest.json").read_text())["stages"]["prune"] for c in res["cells"]]
    assert len(kept) == 2


def test_ray_executor_missing_or_local(tmp_path):
    try:
        import ray  # noqa: F401
    except ImportError:
        from pd_plugins.executor import make_executor

        with pytest.raises(OptionsError, match="needs Ray"):
            make_executor("ray", workers=1)
        pytest.skip("ray not installed; checked the clear error instead")
    sw = Sweep(name="ray", grid={"seed": [0]}, fixed={"pruner": "random", "keep": 0.5, "distiller": "none",
                                                      "evaluator": "none"})
    res = run_sweep(sw, tmp_path / "r", workers=1, executor="ray", progress=False)
    assert res["counts"] == {"done": 1}, res


def test_report_window_plot_and_welch_on_written_cells(tmp_path):
    """Report over hand-written cells (no training): windowed pruner plot and the t-test numbers."""
    from scipy import stats

    from pd_plugins.experiments.report import write_report

    accs = {None: [0.50, 0.52, 0.51], (0.6, 0.7): [0.56, 0.58, 0.57], (0.7, 0.8): [0.55, 0.53, 0.54]}
    cells = []
    for window, values in accs.items():
        for seed, acc in enumerate(values):
            cid = f"w={window}_seed={seed}"
            d = tmp_path / "cells" / cid
            d.mkdir(parents=True)
            pruner = "none" if window is None else "el2n-window"
            cfg = {"dataset": "digits", "distiller": "dm", "ipc": 10, "pruner": pruner, "seed": seed,
                   "resolved": {"keep": 1.0 if window is None else 0.1,
                                "pruner_options": None if window is None else {"window": list(window)}}}
            (d / "config.json").write_text(json.dumps(cfg))
            (d / "eval.json").write_text(json.dumps({"results": [{"model": "convnet", "mean": acc}]}))
            axes = {"seed": seed} if window is None else {"pruner_options.window": list(window), "seed": seed}
            cells.append({"id": cid, "dir": f"cells/{cid}", "axes": axes, "status": "done"})
    (tmp_path / "sweep.json").write_text(json.dumps({"name": "w", "cells": cells}))
    rep = write_report(tmp_path)
    assert {p.split("/")[-1] for p in rep["plots"]} == {"el2n_window.png", "pruned_vs_unpruned.png"}
    by_window = {tuple(g["window"]) if g["window"] else None: g for g in rep["groups"]}
    assert by_window[None]["p_value"] is None and by_window[None]["delta"] is None
    for window in [(0.6, 0.7), (0.7, 0.8)]:
        g = by_window[window]
        assert g["mean"] == pytest.approx(statistics.fmean(accs[window]))
        assert g["delta"] == pytest.approx(statistics.fmean(accs[window]) - statistics.fmean(accs[None]))
        assert g["p_value"] == pytest.approx(stats.ttest_ind(accs[window], accs[None], equal_var=False).pvalue)
    assert "el2n-window [0.6, 0.7)" in (tmp_path / "report" / "report.md").read_text()


def test_list_of_grids_is_the_union_without_mixed_cells():
    sw = Sweep(name="u", grid=[{"distiller": ["dm", "mtt"], "precision": ["fp32"], "compile": [False]},
                               {"distiller": ["dm", "mtt"], "precision": ["bf16"], "compile": [True]}],
               fixed={"ipc": 1})
    combos = sorted((c["config"]["distiller"], c["config"]["precision"], c["config"]["compile"]) for c in sw.cells())
    assert combos == [("dm", "bf16", True), ("dm", "fp32", False), ("mtt", "bf16", True), ("mtt", "fp32", False)]
    # a cell named by two grids is one cell
    again = Sweep(name="d", grid=[{"seed": [0, 1]}, {"seed": [1, 2]}])
    assert sorted(c["config"]["seed"] for c in again.cells()) == [0, 1, 2]


def test_sweep_file_accepts_a_list_of_grids(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("grid:\n  - {pruner: [none]}\n  - {pruner: [random], keep: [0.5]}\nfixed: {ipc: 1}\n")
    cells = Sweep.load(path).cells()
    assert {c["id"] for c in cells} == {"pruner=none", "pruner=random_keep=0.5"}
    path.write_text("grid:\n  - {pruner: [none]}\n  - []\n")
    with pytest.raises(OptionsError, match="list of such maps"):
        Sweep.load(path)


def test_report_names_npz_datasets_by_their_name_option():
    from pd_plugins.experiments.report import dataset_label

    assert dataset_label({"dataset": "npz", "dataset_options": {"name": "mnist"}, "data_root": "/d/x.npz"}) == "mnist"
    assert dataset_label({"dataset": "npz", "dataset_options": {}, "data_root": "/d/fashion.npz"}) == "fashion"
    assert dataset_label({"dataset": "digits"}) == "digits"
