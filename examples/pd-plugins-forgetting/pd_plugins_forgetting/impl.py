"""Forgetting-events scores (Toneva et al., ICLR 2019) on top of ``pd_plugins.ScorePruner``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from pd_plugins import ScorePruner, option


def forgetting_events(correct: torch.Tensor) -> torch.Tensor:
    """Per-sample forgetting score from a (presentations, N) bool matrix of correct predictions.

    Counts transitions correct -> incorrect between consecutive presentations. A sample never
    predicted correctly gets ``presentations`` (more than any learned sample can reach,
    at most ``presentations // 2``), i.e. it ranks as the most forgotten.
    """
    correct = correct.bool()
    events = (correct[:-1] & ~correct[1:]).sum(0).double()
    never = ~correct.any(0)
    events[never] = float(correct.shape[0])
    return events


class ForgettingPruner(ScorePruner):
    """Train a fresh net, record each sample's correctness at every presentation, count forgetting events."""

    name = "forgetting"

    @dataclass(frozen=True)
    class Options:
        epochs: int = option(200, "training epochs of the scoring network (Toneva et al.: 200 on CIFAR-10)")
        lr: float = option(0.1, "SGD learning rate (momentum 0.9, weight decay 5e-4)")
        batch: int = option(128, "minibatch size")
        augment: bool = option(True, "train the scoring net with the run's augmentation (paper: crop + flip)")
        keep: Literal["most-forgotten", "least-forgotten"] = option(
            "most-forgotten", "most-forgotten drops unforgettable samples (the paper); least-forgotten the opposite")
        balanced: bool = option(True, "select per class")

        def validate(self):
            if self.epochs < 2 or self.batch < 1 or self.lr <= 0:
                raise ValueError("epochs must be >= 2 (events need two presentations), batch >= 1, lr > 0")

    budgets = {"quick": {"epochs": 15, "lr": 0.01}}

    def score(self, data, ctx):
        opts = self.options
        with ctx.fork_rng("forgetting-net"):
            net = ctx.make_model(data.channels, data.num_classes, data.im_size)
        aug = ctx.make_augmenter(data) if opts.augment else None
        opt = torch.optim.SGD(net.parameters(), lr=opts.lr, momentum=0.9, weight_decay=5e-4)
        x_all, y_all = data.images(None, ctx.device), data.hard_labels.to(ctx.device)
        n = len(data)
        correct = torch.zeros(opts.epochs, n, dtype=torch.bool)
        for ep in ctx.progress(range(opts.epochs), total=opts.epochs, desc="forgetting"):
            g = ctx.generator("forgetting-epoch", ep)
            perm = torch.randperm(n, generator=g)
            net.train()
            for start in range(0, n, opts.batch):
                idx = perm[start:start + opts.batch]
                x, y = x_all[idx.to(ctx.device)], y_all[idx.to(ctx.device)]
                if aug is not None:
                    x = aug(x, g)
                logits = net(x)
                correct[ep, idx] = (logits.argmax(1) == y).cpu()  # correctness at this presentation
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            ctx.log(ep, forgetting_train_acc=float(correct[ep].float().mean()))
        return forgetting_events(correct)

    def score_key(self, ctx):
        """What the scores depend on besides the data, seed and device: the cache key (keep and balanced
        only select, so changing them reuses the cached scores)."""
        o = self.options
        return {"epochs": o.epochs, "lr": o.lr, "batch": o.batch, "model": [ctx.model, ctx.model_options],
                "augmentation": [ctx.augmentation, ctx.augmentation_options] if o.augment else None}

    def selection(self, keep):
        direction = "hard" if self.options.keep == "most-forgotten" else "easy"
        return {"keep": keep, "direction": direction, "balanced": self.options.balanced}
