"""Each pixel distiller must beat its own initial images on digits, evaluated on paired networks
over 3 seeds with a stated margin (see tests/distill_quality.py). The fast versions run real
algorithms at tiny budgets (ipc 1, width-16 ConvNet, 100 evaluation epochs); an identity control
that returns its initial images must fail the same check."""
from __future__ import annotations

import pytest

from pd_plugins.training.evaluate import StepEvaluator
from tests.distill_quality import IdentityDistiller, paired_accuracy

SEEDS = (0, 1, 2)
SMALL_NET = {"width": 16}
# Mean paired gain in test accuracy required of the fast checks (and every seed must gain).
# Measured at this budget (means over seeds 0-2, one evaluation net): dm +0.20, dc +0.19, dsa +0.18, mtt +0.12.
FAST_MARGIN = 0.05
FAST = {
    "dm": {"iterations": 50, "batch_real": 32},
    "dc": {"iterations": 50, "batch_real": 32, "init": "real"},
    "dsa": {"iterations": 50, "batch_real": 32},
    "mtt": {"iterations": 100, "syn_steps": 10, "expert_epochs": 2, "max_start_epoch": 3, "train_epochs": 5,
            "experts": 2, "lr_img": 10.0, "lr_lr": 1e-6},
}


@pytest.fixture(scope="module")
def fast_evaluator():
    return StepEvaluator(StepEvaluator.resolve_options({"epochs": 100, "repeats": 2}))


def _distiller(host, name, options, budget=None):
    cls = host.registries()["distiller"].load(name)
    return cls(cls.resolve_options(options, budget) if budget else cls.resolve_options(options))


@pytest.mark.parametrize("name", sorted(FAST))
def test_beats_its_own_initial_images_fast(host, digits_splits, tmp_path, fast_evaluator, name):
    paired = paired_accuracy(_distiller(host, name, FAST[name]), digits_splits.train, digits_splits.test, 1, SEEDS,
                             fast_evaluator, cache_dir=tmp_path / "cache", model_options=SMALL_NET)
    assert paired.initial[0] > 0.3  # a real-image start: the comparison is against real data, not noise
    paired.assert_improves(FAST_MARGIN)


def test_identity_distiller_fails_the_check(digits_splits, tmp_path, fast_evaluator):
    paired = paired_accuracy(IdentityDistiller(), digits_splits.train, digits_splits.test, 1, SEEDS, fast_evaluator,
                             cache_dir=tmp_path / "cache", model_options=SMALL_NET)
    assert paired.gains == [0.0, 0.0, 0.0]  # paired networks: no change, no difference
    with pytest.raises(AssertionError, match="mean gain"):
        paired.assert_improves(FAST_MARGIN)
    with pytest.raises(AssertionError, match="mean gain"):
        paired.assert_improves(0.0)  # "every seed must gain" fails it even without a margin


# The slow version: the default ConvNet (width 128) and the quick evaluator (300 epochs), same tiny
# distillation budgets. Measured (seed 0, 2 nets): dm +0.18, dc +0.15, dsa +0.25, mtt +0.18. At ipc 10 with the
# quick budgets digits is near saturation and the paired gains are within about a point (dc -0.4, mtt +0.1,
# dm +0.8, dsa +1.3 on seed 0), too small for a margin.
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAST))
def test_beats_its_own_initial_images_default_net(host, digits_splits, tmp_path, name):
    evaluator = StepEvaluator(StepEvaluator.resolve_options({"repeats": 1}, "quick"))
    paired = paired_accuracy(_distiller(host, name, FAST[name]), digits_splits.train, digits_splits.test, 1, SEEDS,
                             evaluator, cache_dir=tmp_path / "cache")
    paired.assert_improves(FAST_MARGIN)
