"""Coreset baselines as distillers: ``random``, ``herding``, ``k-center`` and ``forgetting``.

Each returns ``ipc`` *real* images per class of the pool (class-major, hard labels), so every
table can carry the papers' baseline rows next to the distillers (algorithms.md 2.7). The
selected positions into the pool and their source indices are recorded in the result's
``meta["coreset"]``. Herding, k-center and forgetting first train a network on the whole pool
(the run's model, by default the DC ConvNet) with the recipe in their options; see
:mod:`pd_plugins.distillation.selection_rules` for the selection rules.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pd_plugins.distillation.real_selection import Selection, SelectionDistiller
from pd_plugins.distillation.selection_rules import (PresentationLog, herding, k_center_greedy, most_forgotten,
                                                     select_per_class, train_on_pool)
from pd_plugins.options import option
from pd_plugins.training.features import embed_dataset


class CoresetDistiller(SelectionDistiller):
    """A distiller whose synthetic set is a per-class selection of real pool images."""

    record_key = "coreset"


class RandomCoreset(CoresetDistiller):
    """``ipc`` uniformly drawn real images per class (seeded)."""

    name = "random"

    def select(self, data, ipc, ctx):
        def pick(c, positions):
            return torch.randperm(positions.numel(), generator=ctx.generator("random-coreset", c))[:ipc]

        return Selection(select_per_class(data, ipc, pick), {"selection": "uniform per class"})


@dataclass(frozen=True)
class NetworkOptions:
    """How the network the selection starts from is trained on the whole pool (the run's model)."""

    epochs: int = option(50, "training epochs of the network on the whole pool")
    lr: float = option(0.01, "SGD learning rate (constant)")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(5e-4, "SGD weight decay")
    batch: int = option(256, "training batch size")
    augment: bool = option(True, "independent DSA (the run's augmentation) while training")

    def validate(self):
        if self.epochs < 1 or self.batch < 1 or self.lr <= 0:
            raise ValueError("epochs and batch must be >= 1 and lr > 0")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("momentum and weight_decay must be >= 0")


class TrainedCoreset(CoresetDistiller):
    """A selection that starts from a network trained on the whole pool."""

    memory_options = ("batch",)

    Options = NetworkOptions
    budgets = {"quick": {"epochs": 20}}

    def recipe(self, ctx):
        from pd_plugins.pruning.scoring import ScorerRecipe

        o = self.options
        return ScorerRecipe(model=ctx.model, epochs=o.epochs, lr=o.lr, momentum=o.momentum,
                            weight_decay=o.weight_decay, batch=o.batch, augment=o.augment)

    def network_record(self, ctx) -> dict:
        return {**self.recipe(ctx).describe(), "model_options": dict(ctx.model_options),
                "augmentation": [ctx.augmentation, ctx.augmentation_options] if self.options.augment else None}


class FeatureCoreset(TrainedCoreset):
    """Selects per class in the trained network's penultimate feature space with :attr:`rule`."""

    rule = None  # (features of one class, k) -> k local positions

    def select(self, data, ipc, ctx):
        features = embed_dataset(train_on_pool(data, ctx, self.recipe(ctx)), data, ctx)
        per_class = select_per_class(data, ipc, lambda c, pos: self.rule(features[pos], ipc))
        return Selection(per_class, {"selection": self.name, "features": "penultimate (embed)",
                                     "feature_dim": features.shape[1], "network": self.network_record(ctx)})


class Herding(FeatureCoreset):
    """Herding: greedy mean matching of penultimate features (Welling 2009; DC's table)."""

    name = "herding"
    rule = staticmethod(herding)


class KCenter(FeatureCoreset):
    """K-Center greedy in penultimate feature space (Sener & Savarese, ICLR 2018)."""

    name = "k-center"
    rule = staticmethod(k_center_greedy)


class Forgetting(TrainedCoreset):
    """The most-forgotten samples per class while a network trains on the pool (Toneva et al., ICLR 2019)."""

    name = "forgetting"

    @dataclass(frozen=True)
    class Options(NetworkOptions):
        epochs: int = option(200, "training epochs = presentations per sample (Toneva et al.: 200 on CIFAR-10)")
        batch: int = option(128, "training batch size (Toneva et al.: 128)")

        def validate(self):
            NetworkOptions.validate(self)
            if self.epochs < 2:
                raise ValueError("epochs must be >= 2 (a forgetting event needs two presentations)")

    def select(self, data, ipc, ctx):
        log = PresentationLog(len(data), self.options.epochs)
        train_on_pool(data, ctx, self.recipe(ctx), on_batch=log)
        counts = log.counts()
        per_class = select_per_class(
            data, ipc, lambda c, pos: most_forgotten(counts[pos], ipc, ctx.generator("forgetting-ties", c)))
        positions = torch.cat(per_class)
        never = ~log.correct.any(0)
        return Selection(per_class, {
            "selection": "most forgotten per class, ties in seeded random order",
            "counts": counts[positions].tolist(), "presentations": self.options.epochs,
            "never_learned": int(never.sum()), "unforgettable": int(((counts == 0) & ~never).sum()),
            "network": self.network_record(ctx)})
