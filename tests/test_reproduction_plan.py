"""docs/reproduction.py: the plan expands into valid sweeps, every claim's arms name real
cells, the verdicts follow the numbers, and a tiny plan runs end to end into a report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_claim_arm_selects_one_cell_per_seed(repro):
    plan = repro.load_plan(ROOT / "docs" / "reproduction.yaml")
    sweeps = {(study, ds): sw for study, ds, sw in repro.study_sweeps(plan, Path("/data"))}
    for claim in plan["claims"]:
        spec = plan["studies"][claim["study"]]
        seeds = spec.get("seeds", plan["seeds"])
        for ds in spec["datasets"]:
            for arm in ("baseline", "variant"):
                sw = sweeps[(repro.claim_study(claim, arm), ds)]
                assert sw.fixed["data_root"] == str(Path("/data") / plan["datasets"][ds]["file"])
                rows = [repro.row_of_cell(c) for c in sw.cells()]
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
        "studies": {"prune": {"datasets": ["digits"], "arm_table": True,
                              "grid": {"pruner": ["none", "random"], "keep": [0.5]}}},
        "claims": [{"id": "c1", "study": "prune", "source": "test", "title": "random beats none",
                    "baseline": {"pruner": "none"}, "variant": {"pruner": "random"}, "expect": "higher"},
                   {"id": "c1_short", "of": "c1", "evaluation": "short", "study": "prune", "source": "test",
                    "title": "random beats none (3 epochs)", "baseline": {"pruner": "none"},
                    "variant": {"pruner": "random"}, "expect": "higher"}],
        "evaluations": {"short": {"studies": ["prune"], "options": {"epochs": 3}}},
        "cross_arch": {"study": "prune", "dataset": "digits", "models": ["convnet", "alexnet"], "repeats": 1},
    }))
    out_md = tmp_path / "docs" / "reproduction.md"
    assets = out_md.parent / "reproduction"
    assets.mkdir(parents=True)
    stale = {**_record("prune", "digits", "none", 0, 0.123, "0ld0000", "2026-01-01"), "cell": "pruner=none_seed=0"}
    (assets / "runs.jsonl").write_text(json.dumps(stale) + "\n")  # carried over until the sweep replaces it
    assert repro.main(["--plan", str(plan_path), "--runs", str(tmp_path / "runs"), "--workers", "1",
                       "--out", str(out_md)]) == 0
    text = out_md.read_text()
    assert "| c1 | test | digits |" in text and "## Cross-architecture" in text
    assert "{rel}" not in text and "reproduction/runs.jsonl" in text  # placeholders filled
    rows = [json.loads(line) for line in (assets / "runs.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["seed"] for r in rows} == {0, 1}
    [session] = json.loads((tmp_path / "runs" / "prune" / "digits" / "provenance.json").read_text())[:1]
    assert {r["commit"] for r in rows} == {session["commit"]} and "0ld0000" not in text
    assert all(r["cross_arch"]["alexnet"] and r["evaluations"]["short"]["acc"] is not None for r in rows)
    for name in ("claims.png", "deltas.png", "cross_arch.png"):
        assert (assets / name).read_bytes()[:4] == b"\x89PNG"
    # the per-arm table: both arms with 2 of 2 seeds, the pool each kept, and their image grids copied beside it
    arm_rows = [line for line in text.split("## Arms in detail")[1].splitlines() if line.startswith("| pruner=")]
    assert [row.split(" | ")[0] for row in arm_rows] == ["| pruner=none", "| pruner=random keep=0.5"]
    assert all(" | 2 of 2 | " in row for row in arm_rows)
    kept = {r["config"]["pruner"]: r["selection"]["kept"] for r in rows}
    assert kept["random"] < kept["none"] == rows[0]["selection"]["of"]
    assert f"{kept['random']:,} of {kept['none']:,}" in arm_rows[1]
    for arm in ("pruner=none", "pruner=random_keep=0.5"):
        for kind in ("synthetic", "pool"):
            png = assets / "prune" / "digits" / f"{arm}-{kind}.png"
            assert png.read_bytes()[:4] == b"\x89PNG" and f"(reproduction/prune/digits/{png.name})" in text
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
    # without the run folders the per-arm table comes back whole from runs.jsonl (whose axes are key-sorted)
    assert repro.main(["--plan", str(plan_path), "--runs", str(tmp_path / "no-runs"), "--report-only",
                       "--out", str(out_md)]) == 0
    carried = [line for line in out_md.read_text().split("## Arms in detail")[1].splitlines()
               if line.startswith("| pruner=")]
    assert carried == arm_rows


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


def _record(study, dataset, pruner, seed, acc, commit, date, **extra):
    """A runs.jsonl cell record as the report reads it."""
    axes = {"pruner": pruner, "seed": seed}
    cfg = {"distiller": "mtt", "pruner": pruner, "seed": seed, "ipc": 1, "keep": None, "pruner_options": {}}
    return {"kind": "cell", "study": study, "dataset": dataset, "cell": f"pruner={pruner}_seed={seed}", "axes": axes,
            "seed": seed, "status": "done", "acc": acc, "config": cfg, "seconds": 1.0, "commit": commit, "date": date,
            "dir": f"{study}/{dataset}/cells/pruner={pruner}_seed={seed}", **extra}


def test_report_only_regenerates_from_runs_jsonl_and_names_each_commit(repro, tmp_path):
    """No run directory: two studies measured at two commits come back from runs.jsonl alone, each with its commit,
    with the re-evaluation beside its claim and a carried-over cross-architecture summary."""
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(json.dumps({
        "name": "two", "seeds": [0, 1, 2], "datasets": {"digits": {"dataset": "digits"}},
        "fixed": {"ipc": 1, "distiller": "mtt"},
        "studies": {"old": {"datasets": ["digits"], "grid": {"pruner": ["none", "random"]}},
                    "new": {"datasets": ["digits"], "grid": {"pruner": ["none", "random"]}}},
        "claims": [{"id": "c_old", "study": "old", "source": "s", "title": "t", "baseline": {"pruner": "none"},
                    "variant": {"pruner": "random"}, "expect": "higher"},
                   {"id": "c_new", "study": "new", "source": "s", "title": "t", "baseline": {"pruner": "none"},
                    "variant": {"pruner": "random"}, "expect": "higher"},
                   {"id": "c_new_fixed", "of": "c_new", "evaluation": "fixed", "study": "new", "source": "s",
                    "title": "t", "baseline": {"pruner": "none"}, "variant": {"pruner": "random"}, "expect": "higher"}],
        "evaluations": {"fixed": {"studies": ["new"], "options": {"use_learned_lr": False}}},
        "cross_arch": {"study": "old", "dataset": "digits", "models": ["convnet", "alexnet"]},
    }))
    fixed = {"selector": {"evaluator": None, "options": {"use_learned_lr": False}}, "commit": "bbbb222",
             "date": "2026-11-29", "lr": 0.01}
    recs = [_record("old", "digits", "none", s, 0.50 + 0.01 * s, "aaaa111", "2026-11-23") for s in range(3)]
    recs += [_record("old", "digits", "random", s, 0.60 + 0.01 * s, "aaaa111", "2026-11-23") for s in range(3)]
    # "new": random loses with the learned lr (0.001) but wins at the fixed lr
    recs += [_record("new", "digits", "none", s, 0.70 + 0.01 * s, "bbbb222", "2026-11-29", lr=0.008,
                     evaluations={"fixed": {**fixed, "acc": 0.40 + 0.01 * s}}) for s in range(3)]
    recs += [_record("new", "digits", "random", s, 0.60 + 0.01 * s, "bbbb222", "2026-11-29", lr=0.001,
                     evaluations={"fixed": {**fixed, "acc": 0.45 + 0.01 * s}}) for s in range(3)]
    recs.append({"kind": "cross_arch", "study": "old", "dataset": "digits", "setting": "unpruned", "commit": "aaaa111",
                 "date": "2026-11-23", "models": {"convnet": {"mean": 0.5, "std": 0.01, "n": 3},
                                                  "alexnet": {"mean": 0.4, "std": 0.02, "n": 3}}, "dirs": []})
    out_md = tmp_path / "docs" / "reproduction.md"
    (out_md.parent / "reproduction").mkdir(parents=True)
    jsonl = out_md.parent / "reproduction" / "runs.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert repro.main(["--plan", str(plan_path), "--report-only", "--runs", str(tmp_path / "absent"),
                       "--out", str(out_md)]) == 0
    text = out_md.read_text()
    assert "| old | digits | `aaaa111` | 2026-11-23 |" in text and "| new | digits | `bbbb222` | 2026-11-29 |" in text
    assert "| c_old | s | digits | 51.00 ± 1.00 | 61.00 ± 1.00 | +10.00 |" in text
    assert "| c_new | s | digits | 71.00 ± 1.00 | 61.00 ± 1.00 | -10.00 |" in text
    assert "| c_new_fixed | s | digits | 41.00 ± 1.00 | 46.00 ± 1.00 | +5.00 |" in text
    # the re-check sits right after its claim, and the re-evaluation table says the verdict changed
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| c_new | s | digits"))
    assert lines[at + 1].startswith("| c_new_fixed | s | digits")
    assert "| c_new | digits | fixed | 0.008 / 0.001 | -10.00 |" in text and "**yes** (reversed → holds)" in text
    assert "| unpruned * | 50.00 ± 1.00 | 40.00 ± 2.00 | 40.00 |" in text
    kept = [json.loads(line) for line in jsonl.read_text().splitlines()]
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert sorted(kept, key=key) == sorted(recs, key=key)  # nothing replaced or lost
    jsonl.write_text(json.dumps({k: v for k, v in recs[0].items() if k != "commit"}) + "\n")
    with pytest.raises(SystemExit, match="without commit"):
        repro.main(["--plan", str(plan_path), "--report-only", "--runs", str(tmp_path / "absent"), "--out", str(out_md)])


def test_margin_claims_need_the_whole_margin(repro):
    """expect {margin: m}: the variant must beat the baseline by at least m, else the verdict names the miss."""
    base = [0.50, 0.52, 0.51]
    over = repro.compare(base, [x + 0.03 for x in base], {"margin": 0.02})
    short = repro.compare(base, [x + 0.01 for x in base], {"margin": 0.02})
    worse = repro.compare(base, [x - 0.01 for x in base], {"margin": 0.02})
    assert over["verdict"].startswith("holds") and repro._holds(over)
    assert short["verdict"] == "misses the 2 pp margin" and not repro._holds(short)
    assert worse["verdict"] == "misses the 2 pp margin (reversed)" and not repro._holds(worse)


def test_a_partial_sweep_replaces_the_carried_cells_it_has_grown_past(repro, monkeypatch, tmp_path):
    """A sweep still running replaces the carried records of its study only once it holds every carried cell."""
    class Sweep:
        def cells(self):
            return ["a", "b", "c", "d"]

    plan = {"studies": {"s": {"datasets": ["d"]}}}
    monkeypatch.setattr(repro, "study_sweeps", lambda plan, root, data: [("s", "d", Sweep())])
    (tmp_path / "s" / "d").mkdir(parents=True)
    (tmp_path / "s" / "d" / "sweep.json").write_text("{}")
    fresh = [{"kind": "cell", "study": "s", "dataset": "d", "cell": c, "acc": 0.9} for c in ("a", "b", "c")]
    monkeypatch.setattr(repro, "cell_records", lambda *args: fresh)
    carried = [{"kind": "cell", "study": "s", "dataset": "d", "cell": "a", "acc": 0.5}]
    assert repro.merge_records(plan, carried, tmp_path) == (fresh, ["s/d"])
    carried.append({"kind": "cell", "study": "s", "dataset": "d", "cell": "z", "acc": 0.5})  # not in the sweep
    assert repro.merge_records(plan, carried, tmp_path) == (carried, [])


def test_a_claim_can_take_its_baseline_from_another_study(repro):
    """``baseline_study``: the baseline arm's cells come from that study, the variant's from the claim's own."""
    def rec(study, distiller, seed, acc, pruner="none"):
        cfg = {"distiller": distiller, "pruner": pruner, "seed": seed}
        return {"kind": "cell", "study": study, "dataset": "d", "cell": f"{distiller}_{pruner}_{seed}",
                "config": cfg, "axes": {"pruner": pruner, "seed": seed}, "acc": acc, "dir": "x",
                "status": "done", "commit": "c", "date": "t"}

    records = ([rec("base", "random", s, 0.70 + s / 100) for s in range(3)]
               + [rec("main", "mtt", s, 0.60 + s / 100, pruner="none") for s in range(3)]      # same pruner as the baseline
               + [rec("main", "mtt", s, 0.80 + s / 100, pruner="el2n-window") for s in range(3)])
    claim = {"id": "x", "study": "main", "baseline_study": "base", "baseline": {"pruner": "none"},
             "variant": {"pruner": "el2n-window"}, "expect": "higher"}
    plan = {"studies": {"main": {"datasets": ["d"]}, "base": {"datasets": ["d"]}}, "claims": [claim]}
    [res] = repro.evaluate_claims(plan, records)
    assert [r["distiller"] for r in res["base_rows"]] == ["random"] * 3   # not main's pruner=none MTT cells
    assert res["delta"] == pytest.approx(0.10) and res["verdict"] == "holds (p < 0.05)"
    [own] = repro.evaluate_claims({**plan, "claims": [{**claim, "baseline_study": "main"}]}, records)
    assert own["delta"] == pytest.approx(0.20)
