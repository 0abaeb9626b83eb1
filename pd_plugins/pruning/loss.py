"""``loss-easy`` / ``loss-hard`` (Moser et al., "Distill the Best, Ignore the Rest").

A scorer trained to convergence on the full training set ("LossConverge"), or loaded from
a checkpoint, gives every sample its cross-entropy loss; within each class the ``keep``
fraction with the lowest (easy) or highest (hard) loss is kept, ``floor(keep * n_c)``.
Both directions share one cached scoring pass.
"""
from __future__ import annotations

from dataclasses import dataclass

from pd_plugins.options import option
from pd_plugins.pruning.trained import ScorerOptions, TrainedScorePruner


class LossPruner(TrainedScorePruner):
    """Per-class converged cross-entropy loss; the direction is fixed by the subclass."""

    statistic = "loss"
    purpose = "loss-converge"
    keep_direction = "easy"

    @dataclass(frozen=True)
    class Options(ScorerOptions):
        epochs: int = option(50, "scorer training epochs ('to convergence'; 50 = the MTT expert length)")
        trials: int = option(1, "independently seeded scorers whose losses are averaged")
        checkpoint: str = option("", "score with this state_dict (torch.save) instead of training a scorer")

        def counts(self):
            return {"epochs": self.epochs, "trials": self.trials}

    budgets = {"quick": {"epochs": 15, "batch": 64, "scorer_options": {"width": 32}}}

    def checkpoint(self):
        return self.options.checkpoint or None

    def runs(self) -> int:
        return self.options.trials

    def direction(self) -> str:
        return self.keep_direction


class LossEasyPruner(LossPruner):
    """Keep the lowest-loss ``keep`` fraction of every class (Moser et al.'s default)."""

    name = "loss-easy"
    keep_direction = "easy"


class LossHardPruner(LossPruner):
    """Keep the highest-loss ``keep`` fraction of every class."""

    name = "loss-hard"
    keep_direction = "hard"
