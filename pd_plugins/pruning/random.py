"""``random``: a seeded random subset, class-balanced by default."""
from __future__ import annotations

from dataclasses import dataclass

from pd_plugins.options import option
from pd_plugins.strategies import ScorePruner


class RandomPruner(ScorePruner):
    """Keep a random ``floor(keep * n_c)`` samples of every class (or of the whole set).

    The random order comes from a generator derived from the run seed, so the kept set is
    part of the run's identity. Scores are NaN: random keys are not a sample statistic.
    """

    name = "random"

    @dataclass(frozen=True)
    class Options:
        balanced: bool = option(True, "select per class (False: over the whole set, class counts drift)")

    def score(self, data, ctx):
        import torch

        return torch.rand(len(data), generator=ctx.generator("random-pruner"), dtype=torch.float64)

    def selection(self, keep):
        return {"keep": keep, "direction": "easy", "balanced": self.options.balanced}

    def cost(self, data, keep, ctx):
        """A seeded permutation: no networks, nothing worth timing."""
        from pd_plugins.planning.costs import StageCost

        return [StageCost("prune", note="a seeded permutation")]

    def prune(self, data, keep, ctx):
        import torch

        result = super().prune(data, keep, ctx)
        result.scores = torch.full((len(data),), float("nan"))
        return result
