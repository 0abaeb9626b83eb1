"""``early-loss`` (Xu et al., "Distill Gold from Massive Ores", the LossInit utility).

Utility = cross-entropy after the first ``epochs`` epochs of training a scorer on the full
set, averaged over ``trials`` independently seeded scorers; per class, the lowest-loss
``keep`` fraction is kept (dropping ``LossInit_large``, the README's recommendation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pd_plugins.options import option
from pd_plugins.pruning.trained import ScorerOptions, TrainedScorePruner


class EarlyLossPruner(TrainedScorePruner):
    """Per-class early-training loss averaged over seeded trials."""

    name = "early-loss"
    statistic = "loss"
    purpose = "loss-init"

    @dataclass(frozen=True)
    class Options(ScorerOptions):
        epochs: int = option(1, "training epochs before the loss is recorded (Xu et al.: initial epochs)")
        trials: int = option(5, "independently seeded scorers whose losses are averaged")
        direction: Literal["easy", "hard"] = option("easy", "easy keeps low early loss (BiLP), hard keeps high")

        def counts(self):
            return {"epochs": self.epochs, "trials": self.trials}

    budgets = {"quick": {"trials": 3, "batch": 64, "scorer_options": {"width": 32}}}

    def direction(self) -> str:
        return self.options.direction

    def runs(self) -> int:
        return self.options.trials
