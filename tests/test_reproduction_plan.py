"""docs/reproduction.py: the plan expands into valid sweeps, every claim's arms name real
cells, the verdicts follow the numbers, and a tiny plan runs end to end into a report."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def repro():
    spec = importlib.util.spec_from_file_location("reproduction", ROOT / "docs" / "reproduction.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_claim_arm_selects_one_cell_per_seed(repro):
    plan = repro.load_plan(ROOT / "docs" / "reproduction.yaml")
    sweeps = {(study, ds): sw for study, ds, sw in repro.study_sweeps(plan, Path("/data"))}
    for claim in plan["claims"]:
        spec = plan["studies"][claim["study"]]
        seeds = spec.get("seeds", plan["seeds"])
        for ds in spec["datasets"]:
            sw = sweeps[(claim["study"], ds)]
            assert sw.fixed["data_root"] == str(Path("/data") / plan["datasets"][ds]["file"])
            rows = [repro.row_of_cell(c) for c in sw.cells()]
            for arm in ("baseline", "variant"):
                hits = [r for r in rows if repro.matches(r, claim[arm])]
                assert sorted(r["seed"] for r in hits) == sorted(seeds), (claim["id"], ds, arm)


def test_option_groups_merge_across_plan_dataset_and_study(repro):
    plan = {"seeds": [0], "fixed": {"model_options": {"width": 8}, "ipc": 1},
            "datasets": {"d": {"dataset": "digits", "dataset_options": {"test_fraction": 0.3}}},
            "studies": {"s": {"datasets": ["d"], "fixed": {"model_options": {"depth": 2}}, "grid": {"pruner": ["none"]}}}}
    [(_, _, sw)] = repro.study_sweeps(plan, Path("."))
    assert sw.fixed["model_options"] == {"width": 8, "depth": 2}
    assert sw.fixed["dataset_options"] == {"test_fraction": 0.3} and "data_root" not in sw.fixed


def test_verdicts_follow_direction_and_tolerance(repro):
    up = repro.compare([0.50, 0.51, 0.52], [0.60, 0.61, 0.62], "higher")
    assert up["verdict"] == "holds (p < 0.05)" and up["delta"] == pytest.approx(0.10)
    noisy = repro.compare([0.50, 0.60, 0.40], [0.52, 0.62, 0.42], "higher")
    assert noisy["verdict"] == "same direction, not significant"
    down = repro.compare([0.60, 0.61, 0.62], [0.50, 0.51, 0.52], "higher")
    assert down["verdict"] == "reversed (p < 0.05)"
    assert repro.compare([0.9], [0.903], {"within": 0.005})["verdict"] == "holds"
    assert repro.compare([0.9], [0.91], {"within": 0.005})["verdict"] == "does not hold"
    assert repro.compare([], [0.5], "higher")["verdict"] == "not run"


def test_tiny_plan_runs_and_writes_the_report(repro, tmp_path, monkeypatch):
    monkeypatch.setenv("PD_CACHE_DIR", str(tmp_path / "cache"))
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(json.dumps({
        "name": "tiny", "seeds": [0, 1],
        "datasets": {"digits": {"dataset": "digits"}},
        "fixed": {"ipc": 1, "distiller": "dm", "eval_repeats": 1, "model_options": {"width": 16},
                  "distiller_options": {"iterations": 2, "batch_real": 16},
                  "evaluator_options": {"epochs": 10, "batch": 64}},
        "studies": {"prune": {"datasets": ["digits"], "grid": {"pruner": ["none", "random"], "keep": [0.5]}}},
        "claims": [{"id": "c1", "study": "prune", "source": "test", "title": "random beats none",
                    "baseline": {"pruner": "none"}, "variant": {"pruner": "random"}, "expect": "higher"},
                   {"id": "c1_short", "of": "c1", "evaluation": "short", "study": "prune", "source": "test",
                    "title": "random beats none (3 epochs)", "baseline": {"pruner": "none"},
                    "variant": {"pruner": "random"}, "expect": "higher"}],
        "evaluations": {"short": {"studies": ["prune"], "options": {"epochs": 3}}},
        "cross_arch": {"study": "prune", "dataset": "digits", "models": ["convnet", "alexnet"], "repeats": 1},
    }))
    out_md = tmp_path / "docs" / "reproduction.md"
    assert repro.main(["--plan", str(plan_path), "--runs", str(tmp_path / "runs"), "--workers", "1",
                       "--out", str(out_md)]) == 0
    text = out_md.read_text()
    assert "| c1 | test | digits |" in text and "## Cross-architecture" in text
    assert "{rel}" not in text and "reproduction/runs.jsonl" in text  # placeholders filled
    assets = out_md.parent / "reproduction"
    rows = [json.loads(line) for line in (assets / "runs.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["seed"] for r in rows} == {0, 1}
    for name in ("claims.png", "deltas.png", "cross_arch.png"):
        assert (assets / name).read_bytes()[:4] == b"\x89PNG"
    for r in rows:  # every listed run directory is real and holds the config the report quotes
        cfg = json.loads((tmp_path / "runs" / r["dir"] / "config.json").read_text())
        assert cfg == r["config"]
        assert f"`{r['dir']}`" in text
    # the re-evaluation: one per cell beside its eval.json, and its claim set beside the original
    from pd_plugins.experiments.reeval import list_variants

    for r in rows:
        [variant] = list_variants(tmp_path / "runs" / r["dir"])
        assert variant["options"]["epochs"] == 3 and variant["options"]["batch"] == 64  # the cell's other options
    assert "## Re-evaluations" in text and "| c1 | digits | short |" in text and "| c1_short | test | digits |" in text
    gone = next((tmp_path / "runs" / rows[0]["dir"] / "evals").iterdir())
    gone.unlink()
    sweep_before = (tmp_path / "runs" / "prune" / "digits" / "sweep.json").read_text()
    assert repro.main(["--plan", str(plan_path), "--runs", str(tmp_path / "runs"), "--evaluations-only",
                       "--out", str(out_md)]) == 0
    assert gone.exists() and (tmp_path / "runs" / "prune" / "digits" / "sweep.json").read_text() == sweep_before
    # a rerun skips every finished cell
    assert repro.main(["--plan", str(plan_path), "--runs", str(tmp_path / "runs"), "--workers", "1",
                       "--out", str(out_md)]) == 0
    summary = json.loads((tmp_path / "runs" / "prune" / "digits" / "sweep.json").read_text())
    assert summary["counts"] == {"skipped": 4}


def test_fixed_lr_claims_recheck_the_mtt_claims(repro):
    """Every fixed-lr claim repeats an MTT claim's arms under a re-evaluation the plan defines for its study."""
    plan = repro.load_plan(ROOT / "docs" / "reproduction.yaml")
    claims = {c["id"]: c for c in plan["claims"]}
    rechecks = [c for c in plan["claims"] if c.get("evaluation")]
    assert {c["of"] for c in rechecks} == {"moser_mtt", "sundar_window_low", "sundar_window_high", "sundar_init"}
    for c in rechecks:
        spec = plan["evaluations"][c["evaluation"]]
        assert spec["options"] == {"use_learned_lr": False} and c["study"] in spec["studies"]
        orig = claims[c["of"]]
        assert (c["study"], c["baseline"], c["variant"]) == (orig["study"], orig["baseline"], orig["variant"])
    assert repro.evaluation_selector(plan, "fixed_lr") == {"evaluator": None, "options": {"use_learned_lr": False}}
