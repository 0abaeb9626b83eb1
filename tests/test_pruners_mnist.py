"""Real-data check on an MNIST subset: easy/hard losses and injected label noise."""
from __future__ import annotations

import pytest
import torch

from conftest import shared_file


@pytest.mark.slow
@pytest.mark.real_data
def test_mnist_easy_hard_and_mislabels(ctx, tmp_path, monkeypatch):
    from pd_plugins.data.builtin import npz
    from pd_plugins.pruning.loss import LossEasyPruner, LossHardPruner

    monkeypatch.delenv("PD_CACHE_DIR", raising=False)
    ctx.cache_dir = tmp_path / "cache"  # loss-hard reuses loss-easy's scores
    train = npz(str(shared_file("mnist.npz"))).train
    g = torch.Generator().manual_seed(0)
    sub = train.subset(torch.randperm(len(train), generator=g)[:2000])
    # inject 60 wrong labels (label + random non-zero offset)
    bad = torch.randperm(len(sub), generator=g)[:60]
    labels = sub.labels.clone()
    labels[bad] = (labels[bad] + torch.randint(1, 10, (60,), generator=g)) % 10
    from dataclasses import replace

    noisy = replace(sub, labels=labels)
    opts = {"epochs": 3, "batch": 64, "scorer_options": {"width": 32}, "augment": False}
    easy = LossEasyPruner(LossEasyPruner.resolve_options(opts)).prune(noisy, 0.5, ctx)
    hard = LossHardPruner(LossHardPruner.resolve_options(opts)).prune(noisy, 0.5, ctx)
    assert hard.meta["scoring"]["cache"] == "hit"
    loss = easy.scores
    easy_mean, hard_mean = float(loss[easy.keep].mean()), float(loss[hard.keep].mean())
    caught = float(torch.isin(bad, hard.keep).float().mean())
    print(f"MNIST-2000: easy mean loss {easy_mean:.4f}, hard mean loss {hard_mean:.4f}, mislabels in hard set {caught:.2%}")
    assert easy_mean < hard_mean
    assert caught >= 0.8
    assert not torch.isin(bad, easy.keep).float().mean() > 0.2
