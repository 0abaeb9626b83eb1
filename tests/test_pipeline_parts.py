"""The runner's parts on their own: config resolution, result serialisation, the run directory."""
from __future__ import annotations

import dataclasses

import pytest


def test_resolve_run_checks_without_writing(tmp_path, host):
    from pd_plugins.config import RunConfig
    from pd_plugins.errors import OptionsError
    from pd_plugins.pipeline.resolve import ResolvedRun, resolve_run

    out = tmp_path / "never"
    plan = resolve_run(RunConfig(pruner="random", keep=0.3, distiller="dm", ipc=2, out=str(out), device="cpu",
                                 distiller_options={"iterations": 7}), host)
    assert isinstance(plan, ResolvedRun) and not out.exists()
    assert plan.keep == pytest.approx(0.3) and plan.budget == "quick"  # digits: quick by default
    assert plan.distiller_options.iterations == 7 and plan.pruner_cls.kind() == "pruner" and plan.init_select is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.keep = 0.5
    pruner, distiller, evaluator = plan.strategies()
    assert distiller.options.iterations == 7 and pruner is not None and evaluator is not None
    assert plan.to_json()["distiller_options"]["iterations"] == 7
    with pytest.raises(OptionsError, match="needs a pruner"):
        resolve_run(RunConfig(pruner="none", keep=0.4, out=str(out)), host)
    assert not out.exists()


def test_prune_and_distill_results_round_trip(tmp_path):
    import torch

    from pd_plugins.errors import DataError
    from pd_plugins.types import DistillResult, PruneResult

    pruned = PruneResult(keep=torch.tensor([0, 3, 5]), scores=torch.rand(6), pruner="x", options={"a": 1},
                         meta={"kept": 3}, source_index=torch.tensor([10, 13, 15]))
    pruned.save(tmp_path / "prune.pt", fingerprint="f")
    back = PruneResult.load(tmp_path / "prune.pt")
    assert torch.equal(back.keep, pruned.keep) and torch.equal(back.scores, pruned.scores)
    assert torch.equal(back.source_index, pruned.source_index) and (back.options, back.meta) == ({"a": 1}, {"kept": 3})
    assert torch.load(tmp_path / "prune.pt", weights_only=True)["fingerprint"] == "f"

    distilled = DistillResult(images=torch.randn(4, 1, 8, 8, requires_grad=True), labels=torch.arange(4), ipc=1,
                              distiller="y", lr=0.02, history=[{"loss": 1.5}], zca={"k": torch.eye(2)})
    distilled.save(tmp_path / "distill.pt")
    back = DistillResult.load(tmp_path / "distill.pt")
    assert torch.equal(back.images, distilled.images.detach()) and not back.images.requires_grad
    assert (back.ipc, back.distiller, back.lr, back.history) == (1, "y", 0.02, [{"loss": 1.5}])
    assert torch.equal(back.zca["k"], torch.eye(2))

    torch.save({"images": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(DataError, match="lacks labels, ipc, distiller"):
        DistillResult.load(tmp_path / "bad.pt")


def test_run_directory_marks_and_resume_rules(tmp_path):
    from pd_plugins.errors import StageExistsError
    from pd_plugins.pipeline.run_dir import RunDirectory

    d = RunDirectory(tmp_path / "r")
    d.prepare(("prune",), {"a": 1}, {"versions": {}})
    assert not d.stage_done("prune", "fp")
    d.artifact("prune").write_bytes(b"x")
    d.mark_done("prune", "fp")
    assert d.stage_done("prune", "fp") and not d.stage_done("prune", "other")
    with pytest.raises(StageExistsError, match="already finished"):
        RunDirectory(tmp_path / "r").prepare(("prune",), {"a": 1}, {})
    with pytest.raises(StageExistsError, match="differs in: a"):
        RunDirectory(tmp_path / "r").prepare(("prune", "eval"), {"a": 2}, {})
    RunDirectory(tmp_path / "r", overwrite=True).prepare(("prune",), {"a": 2}, {})
    assert not d.stage_done("prune", "fp") and not d.artifact("prune").exists()
