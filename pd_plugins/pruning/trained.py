"""Base of the pruners that score samples with trained scorer networks.

``loss-easy``/``loss-hard``, ``el2n-window`` and ``early-loss`` differ only in the
statistic, the number of training epochs before scoring, the number of averaged runs and
the selection rule; everything else (recipe, batched scoring, caching, selection) is shared.
"""
from __future__ import annotations

from dataclasses import dataclass

from pd_plugins.options import option
from pd_plugins.strategies import ScorePruner


@dataclass(frozen=True)
class ScorerOptions:
    """Scorer recipe (MTT expert recipe by default) and selection flags shared by trained-scorer pruners."""

    scorer: str = option("convnet", "scorer architecture from the model registry (resnet18 as in Moser et al.)")
    scorer_options: dict = option({}, "scorer model options, e.g. width=32,depth=3")
    lr: float = option(0.01, "scorer SGD learning rate (MTT expert recipe)")
    momentum: float = option(0.0, "scorer SGD momentum (MTT expert recipe: 0)")
    weight_decay: float = option(0.0, "scorer SGD weight decay (MTT expert recipe: 0)")
    batch: int = option(256, "scorer training batch size")
    augment: bool = option(True, "independent DSA (the run's augmentation) while training the scorer")
    score_batch: int = option(512, "batch size of the scoring pass (>= 256)")
    balanced: bool = option(True, "select per class (False: over the whole set)")
    allow_empty: bool = option(False, "allow a class to keep 0 samples")

    def validate(self):
        if self.lr <= 0 or self.batch < 1 or self.score_batch < 1:
            raise ValueError("lr must be > 0, batch and score_batch >= 1")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("momentum and weight_decay must be >= 0")
        for name, value in self.counts().items():
            if value < 1:
                raise ValueError(f"{name}{' (K)' if name == 'models' else ''} must be >= 1, got {value}")

    def counts(self) -> dict[str, int]:
        """The count options a subclass adds (epochs, trials, models, ...), each checked to be >= 1."""
        return {}


class TrainedScorePruner(ScorePruner):
    """Scores with :func:`pd_plugins.pruning.scoring.score_dataset`; subclasses set the procedure."""

    statistic = "loss"
    purpose = ""
    memory_options = ("batch", "score_batch")

    def train_epochs(self) -> int:
        return int(self.options.epochs)

    def runs(self) -> int:
        """Independently seeded scorers averaged (one unless a subclass says otherwise)."""
        return 1

    def checkpoint(self):
        return None

    def recipe(self):
        from pd_plugins.pruning.scoring import ScorerRecipe, parse_model_options

        o = self.options
        return ScorerRecipe(model=o.scorer, model_options=parse_model_options(o.scorer_options, o.scorer),
                            epochs=self.train_epochs(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                            batch=o.batch, augment=o.augment, score_batch=o.score_batch)

    def _procedure(self) -> dict:
        return {"stat": self.statistic, "runs": self.runs(), "purpose": self.purpose, "checkpoint": self.checkpoint()}

    def cached_score(self, data, ctx):
        """Scores of :func:`~pd_plugins.pruning.scoring.score_dataset`, which caches them by scorer
        procedure (shared by every pruner of the same ``purpose``), and its meta."""
        from pd_plugins.pruning.scoring import score_dataset

        return score_dataset(data, ctx, self.recipe(), **self._procedure())

    def score(self, data, ctx):
        return self.cached_score(data, ctx)[0]

    def context_identity(self, ctx):
        from pd_plugins.pruning.scoring import scorer_identity

        return {"scorer": scorer_identity(ctx, self.recipe(), **self._procedure())}

    def cost(self, data, keep, ctx):
        """``runs`` scorers trained ``epochs`` epochs on the whole set, each then scoring it once (a
        checkpoint replaces the training); nothing is read from the score cache."""
        from pd_plugins.planning.probes import trained_networks_cost
        from pd_plugins.training.evaluate import train_network

        recipe = self.recipe()
        return [trained_networks_cost(
            "prune", lambda: ctx.make_model(data.channels, data.num_classes, data.im_size, name=recipe.model,
                                            **recipe.model_options),
            data, ctx, role=f"scorer ({recipe.model})", networks=1 if self.checkpoint() else self.runs(),
            epochs=0 if self.checkpoint() else recipe.epochs, batch=recipe.batch, lr=recipe.lr,
            momentum=recipe.momentum, weight_decay=recipe.weight_decay, augment=recipe.augment, tested=data,
            test_batch=recipe.score_batch, lower=("-P batch", "-P score_batch"), train_network=train_network,
            note="no cached scores")]

    def selection(self, keep):
        return {"keep": keep, "direction": self.direction(), "balanced": self.options.balanced,
                "allow_empty": self.options.allow_empty}

    def direction(self) -> str:
        return "easy"
