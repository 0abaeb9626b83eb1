"""DM optimises what it claims to (loss falls under a fixed embedder, gradients reach every
synthetic image) and the random pruner keeps the class balance it promises."""
from __future__ import annotations

import math

import pytest
import torch

from pd_plugins.distillation.dm import DMObjective
from pd_plugins.distillation.objectives import distill_pixels
from pd_plugins.pruning.random import RandomPruner


class FixedNetDM(DMObjective):
    """DM with the embedder and real-batch draw of iteration 0 at every iteration."""

    def begin_iteration(self, it):
        super().begin_iteration(0)


@pytest.fixture
def small_train(digits_splits):
    """20 digits per class: enough structure, little compute."""
    keep = torch.cat([idx[:20] for idx in digits_splits.train.by_class()])
    return digits_splits.train.subset(keep)


def test_dm_loss_decreases_with_fixed_embedder(small_train, ctx):
    obj = FixedNetDM(batch_real=10_000, augment=False)  # whole classes: a deterministic objective
    result = distill_pixels(obj, small_train, small_train, 2, ctx, name="dm", iterations=20, lr_img=1.0,
                            momentum=0.5, init="real", log_every=1, options={})
    losses = [row["loss"] for row in result.history]
    assert len(losses) == 20 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.75 * losses[0], losses
    falls = sum(b < a for a, b in zip(losses, losses[1:]))
    assert falls >= 16, losses  # momentum may overshoot now and then, but the trend is down


def test_dm_fixed_embedder_really_fixed(small_train, ctx):
    obj = FixedNetDM(batch_real=10_000, augment=False)
    obj.setup(small_train, 2, None, ctx)
    obj.begin_iteration(3)
    a = [p.clone() for p in obj.net.parameters()]
    obj.begin_iteration(7)
    assert all(torch.equal(x, y) for x, y in zip(a, obj.net.parameters()))
    plain = DMObjective(batch_real=8, augment=False)
    plain.setup(small_train, 2, None, ctx)
    plain.begin_iteration(3)
    b = [p.clone() for p in plain.net.parameters()]
    plain.begin_iteration(4)
    assert not all(torch.equal(x, y) for x, y in zip(b, plain.net.parameters()))  # real DM: fresh net per iteration


@pytest.mark.parametrize("augment", [False, True])
def test_dm_gradients_reach_every_synthetic_image(small_train, ctx, augment):
    from pd_plugins.distillation.synthetic import initial_images

    ipc = 2
    obj = DMObjective(batch_real=32, augment=augment)
    obj.setup(small_train, ipc, None, ctx)
    obj.begin_iteration(0)
    images = initial_images(small_train, ipc, "real", torch.Generator().manual_seed(0)).requires_grad_(True)
    loss, _ = obj.loss(images, 0, 0)
    loss.backward()
    assert loss.item() > 0 and images.grad is not None
    per_image = images.grad.flatten(1).abs().sum(1)
    assert torch.isfinite(images.grad).all() and (per_image > 0).all(), per_image
    assert all(not p.requires_grad and p.grad is None for p in obj.net.parameters())  # the embedder stays frozen


def _prune(data, keep, seed=0, **options):
    from pd_plugins.pipeline.context import RunContext

    pruner = RandomPruner(RandomPruner.resolve_options(options))
    return pruner.prune(data, keep, RunContext(seed=seed, device="cpu", stage="prune"))


@pytest.mark.parametrize("keep", [0.07, 0.2, 0.5, 1.0])
def test_random_balanced_keeps_floor_per_class(digits_splits, keep):
    train = digits_splits.train
    res = _prune(train, keep)
    counts = torch.bincount(train.hard_labels[res.keep], minlength=10).tolist()
    assert counts == [math.floor(keep * n + 1e-9) for n in train.class_counts()]
    assert res.keep.unique().numel() == res.keep.numel()
    assert torch.isnan(res.scores).all()


def test_random_global_mode_drifts_but_keeps_total(digits_splits):
    train = digits_splits.train
    keep = 0.2
    per_class = []
    for seed in range(3):
        res = _prune(train, keep, seed=seed, balanced=False)
        assert res.keep.numel() == math.floor(keep * len(train))
        per_class.append(torch.bincount(train.hard_labels[res.keep], minlength=10).tolist())
    balanced = [math.floor(keep * n) for n in train.class_counts()]
    assert any(c != balanced for c in per_class)  # class counts drift in global mode


def test_random_pruner_is_seeded(digits_splits):
    train = digits_splits.train
    a, b, c = _prune(train, 0.3, seed=1), _prune(train, 0.3, seed=1), _prune(train, 0.3, seed=2)
    assert torch.equal(a.keep, b.keep) and not torch.equal(a.keep, c.keep)
