"""Run directories written by pd_plugins 0.2 (before the runner was split) still load and resume.

``fixtures/run_v02`` was written by ``pd-run --dataset digits --pruner random --keep 0.5 --distiller dm
--ipc 1 -D iterations=5 --evaluator dsa-step -E epochs=3 --eval-repeats 1 --budget quick --device cpu``
with the single-class runner. The current code must recognise every stage as done (same fingerprints)
and load the artifacts instead of recomputing them.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "run_v02"


def _copy(tmp_path) -> Path:
    dest = tmp_path / "run_v02"
    shutil.copytree(FIXTURE, dest)
    return dest


def _run(out: Path):
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.runner import Run

    values = json.loads((out / "config.json").read_text())
    values.pop("resolved")
    return Run(RunConfig.from_dict({**values, "out": str(out)}), quiet=True)


def _forbid_compute(monkeypatch, run) -> None:
    """Any strategy or stage computation fails the test."""

    def boom(*args, **kwargs):
        raise AssertionError("a finished stage was recomputed")

    monkeypatch.setattr(type(run.pruner), "prune", boom)
    monkeypatch.setattr(type(run.distiller), "distill", boom)
    try:
        from pd_plugins.pipeline import stages
    except ImportError:  # the single-class runner
        return
    monkeypatch.setattr(stages.PruneStage, "compute", boom)
    monkeypatch.setattr(stages.DistillStage, "compute", boom)


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_fingerprints_match_the_recorded_ones(tmp_path):
    out = _copy(tmp_path)
    run = _run(out)
    recorded = {stage: entry["fingerprint"] for stage, entry in _manifest(out)["stages"].items()}
    data_fp = run.data().train.fingerprint()
    assert set(recorded) == {"prune", "distill", "eval"}
    for stage, fp in recorded.items():
        assert run.stage_fingerprint(stage, data_fp) == fp, stage
        assert run.stage_done(stage, fp)


def test_finished_stages_load_without_recomputing(tmp_path, monkeypatch):
    import torch

    from pd_plugins.errors import StageExistsError

    out = _copy(tmp_path)
    run = _run(out)
    _forbid_compute(monkeypatch, run)
    monkeypatch.setattr(type(run.evaluator), "evaluate", lambda *a, **k: pytest.fail("eval recomputed"))
    data_fp = run.data().train.fingerprint()
    saved_prune = torch.load(out / "prune.pt", weights_only=True)
    saved_distill = torch.load(out / "distill.pt", weights_only=True)

    pruned = run.run_prune(data_fp)
    assert torch.equal(pruned.keep, saved_prune["keep"]) and pruned.pruner == "random"
    assert pruned.meta["kept"] == int(saved_prune["keep"].numel())
    distilled = run.run_distill(data_fp, pruned)
    assert torch.equal(distilled.images, saved_distill["images"])
    assert torch.equal(distilled.labels, saved_distill["labels"])
    assert distilled.ipc == 1 and distilled.history == saved_distill["history"]
    evaluated = run.run_eval(data_fp, pruned, distilled)
    assert evaluated == json.loads((out / "eval.json").read_text())

    with pytest.raises(StageExistsError, match="already finished"):
        _run(out).execute()


def test_resume_recomputes_only_the_missing_stage(tmp_path, monkeypatch):
    out = _copy(tmp_path)
    man = _manifest(out)
    del man["stages"]["eval"]
    (out / "manifest.json").write_text(json.dumps(man))
    (out / "eval.json").unlink()
    before = {name: (out / name).read_bytes() for name in ("prune.pt", "distill.pt")}

    run = _run(out)
    _forbid_compute(monkeypatch, run)
    summary = run.execute()

    after = _manifest(out)["stages"]
    for stage in ("prune", "distill"):
        assert after[stage] == man["stages"][stage]  # neither re-marked nor re-fingerprinted
    assert {name: (out / name).read_bytes() for name in before} == before
    assert after["eval"]["fingerprint"] == json.loads((FIXTURE / "manifest.json").read_text())["stages"]["eval"][
        "fingerprint"]
    import torch

    assert summary["kept"] == int(torch.load(out / "prune.pt", weights_only=True)["keep"].numel())
    assert summary["synthetic"] == int(torch.load(out / "distill.pt", weights_only=True)["images"].shape[0])
    assert summary["acc_mean"] == json.loads((out / "eval.json").read_text())["results"][0]["mean"]
