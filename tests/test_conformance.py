"""Every built-in pruner and distiller passes the plugin authors' conformance checks (pd_plugins.testing)."""
from __future__ import annotations

import dataclasses

import pytest

from pd_plugins.errors import OptionsError
from pd_plugins.testing import check_dataset, check_distiller, check_evaluator, check_pruner, tiny_splits

SCORER = {"epochs": 2, "batch": 16, "augment": False}
PRUNERS = {
    "random": {},
    "loss-easy": SCORER,
    "loss-hard": SCORER,
    "el2n-window": {**SCORER, "models": 2, "score_epoch": 1},
    "early-loss": {**SCORER, "epochs": 1, "trials": 2},
}
PIXEL = {"iterations": 3, "batch_real": 4, "log_every": 1}
DISTILLERS = {
    "dm": PIXEL,
    "dc": {**PIXEL, "outer_loop": 2, "inner_loop": 1},
    "dsa": {**PIXEL, "outer_loop": 2, "inner_loop": 1},
    "mtt": {"iterations": 3, "syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 1, "train_epochs": 2,
            "experts": 2, "expert_batch": 10, "lr_img": 10.0, "lr_lr": 1e-6, "log_every": 1},
    "glad": {"iterations": 3, "log_every": 1, "objective": "dm", "objective_options": {"batch_real": 4}},
    "random": {},
    "herding": {"epochs": 2, "batch": 16},
    "k-center": {"epochs": 2, "batch": 16},
    "forgetting": {"epochs": 2, "batch": 16},
}


def test_every_builtin_is_covered(host):
    reg = host.registries()
    assert set(reg["pruner"].names()) == set(PRUNERS)
    assert set(reg["distiller"].names()) - set(DISTILLERS) == {"ld3m"}  # needs a diffusers prior: test_generative


@pytest.mark.device
@pytest.mark.parametrize("name", sorted(PRUNERS))
def test_builtin_pruner_conforms(host, name, device):
    report = check_pruner(host.registries()["pruner"].load(name), PRUNERS[name], context={"device": device})
    assert {"options", "contracts", "result", "determinism"} <= set(report.checked)
    if name != "random":  # trained scorers cache their scores; random ones are not worth caching
        assert "score cache" in report.checked


@pytest.mark.device
@pytest.mark.parametrize("name", sorted(DISTILLERS))
def test_builtin_distiller_conforms(host, name, device):
    report = check_distiller(host.registries()["distiller"].load(name), DISTILLERS[name], context={"device": device})
    assert {"options", "contracts", "result", "determinism"} <= set(report.checked)
    if name in ("dm", "dc", "dsa", "mtt", "glad"):
        assert "resume" in report.checked  # their loops checkpoint, so a killed run must resume exactly
    else:  # a coreset selection is one step: nothing to resume
        assert "no checkpoint" in report.skipped["resume"]


def test_builtin_evaluator_and_dataset_conform(host):
    reg = host.registries()
    report = check_evaluator(reg["evaluator"].load("dsa-step"), {"epochs": 2, "repeats": 1, "batch": 16})
    assert report.checked == ["options", "bad option value", "result", "determinism"]
    assert check_dataset(reg["dataset"].load("digits")).checked == ["splits", "determinism"]


# -- the checks catch what they promise to catch ----------------------------------------------


def _random_pruner(host):
    return host.registries()["pruner"].load("random")


def test_check_pruner_catches_nondeterminism(host):
    import torch

    base = _random_pruner(host)

    class Clocked(base):  # draws from the global RNG instead of ctx.generator
        name = "clocked"

        def score(self, data, ctx):
            return torch.rand(len(data), dtype=torch.float64)

    with pytest.raises(AssertionError, match="same seed"):
        check_pruner(Clocked)


def test_check_pruner_ignores_a_shared_score_cache(host, tmp_path, monkeypatch):
    import torch

    from pd_plugins import ScorePruner

    class Clocked(ScorePruner):  # nondeterministic, but cached: only separate caches reveal it
        name = "clocked-cached"

        def score(self, data, ctx):
            return torch.rand(len(data), dtype=torch.float64)

        def score_key(self, ctx):
            return {}

    monkeypatch.setenv("PD_CACHE_DIR", str(tmp_path / "shared"))
    with pytest.raises(AssertionError, match="same seed"):
        check_pruner(Clocked)
    assert not (tmp_path / "shared").exists()


def test_check_pruner_catches_a_bad_result(host):
    import torch

    from pd_plugins import Pruner, PruneResult

    class Unsorted(Pruner):
        name = "unsorted"

        def prune(self, data, keep, ctx):
            return PruneResult(keep=torch.arange(len(data) // 2).flip(0), scores=None, pruner=self.name)

    with pytest.raises(AssertionError, match="sorted"):
        check_pruner(Unsorted)


def test_check_pruner_catches_an_unvalidated_option(host):
    from pd_plugins import Pruner, option

    class Lenient(Pruner):
        name = "lenient"

        @dataclasses.dataclass(frozen=True)
        class Options:
            count: int = option(1, "a count")

        @classmethod
        def resolve_options(cls, values=None, budget=None):  # swallows every value: no OptionsError
            return cls.Options()

    with pytest.raises(AssertionError, match="an unknown option did not raise OptionsError"):
        check_pruner(Lenient)


def test_check_distiller_catches_wrong_labels_and_a_broken_resume(host):
    import torch

    from pd_plugins import Distiller, DistillResult

    class OneClass(Distiller):
        name = "one-class"

        def distill(self, data, ipc, ctx, init_pool=None):
            n = data.num_classes * ipc
            return DistillResult(images=data.images()[:n], labels=torch.zeros(n, dtype=torch.long), ipc=ipc,
                                 distiller=self.name)

    with pytest.raises(AssertionError, match="ipc per class"):
        check_distiller(OneClass)

    dm = host.registries()["distiller"].load("dm")

    class Forgetful(dm):  # checkpoints, but ignores its checkpoint on resume and starts over with other noise
        name = "forgetful"

        def distill(self, data, ipc, ctx, init_pool=None):
            from dataclasses import replace

            if ctx.load_checkpoint() is not None:
                ctx.clear_checkpoint()
                ctx = replace(ctx, seed=ctx.seed + 1)
            return super().distill(data, ipc, ctx, init_pool)

    with pytest.raises(AssertionError, match="resumed run differs"):
        check_distiller(Forgetful, PIXEL)


def test_tiny_splits_are_learnable_and_seeded():
    a, b = tiny_splits(), tiny_splits()
    assert a.train.fingerprint() == b.train.fingerprint() and a.train.class_counts() == [10, 10, 10]
    x, y = a.train.images().flatten(1), a.train.hard_labels
    means = torch_stack([x[y == c].mean(0) for c in range(3)])
    nearest = ((a.test.images().flatten(1)[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == a.test.hard_labels).float().mean() == 1.0  # nearest class mean separates the test split


def torch_stack(xs):
    import torch

    return torch.stack(xs)


def test_fixtures_from_the_kit(tiny_dataset, run_context, pd_host):
    assert len(tiny_dataset) == 30 and tiny_dataset.num_classes == 3 and tiny_dataset.channels == 1
    assert run_context.seed == 0 and run_context.device == "cpu" and run_context.work_dir.exists()
    assert "random" in pd_host.registries()["pruner"].names()
    with pytest.raises(OptionsError):
        _random_pruner(pd_host).resolve_options({"balanced": "maybe"})
