"""``el2n-window`` (Sundar et al., "Prune then Distill", after Paul et al.'s Data Diet).

EL2N(x, y) = ||softmax(f(x)) - onehot(y)||_2 at an early epoch (default 20, capped by the
training length), computed per scorer and averaged over ``models`` independently seeded
scorers, then ranked. Kept: ascending-EL2N positions ``[floor(lo*n_c), floor(hi*n_c))`` of
every class (default window 0.70-0.80), so the kept fraction is ``hi - lo``.
"""
from __future__ import annotations

from dataclasses import dataclass

from pd_plugins.options import option
from pd_plugins.pruning.trained import ScorerOptions, TrainedScorePruner


def window_fractions(window) -> tuple[float, float]:
    """``(lo, hi)`` as fractions; values are percentiles when ``hi > 1`` (e.g. ``70,80``)."""
    if len(window) != 2:
        raise ValueError(f"window needs two values lo,hi; got {list(window)}")
    lo, hi = float(window[0]), float(window[1])
    if not (0.0 <= lo <= 100.0 and 0.0 <= hi <= 100.0):
        raise ValueError(f"window must lie in [0, 1] as fractions or [0, 100] as percentiles; got {lo},{hi}")
    if hi > 1.0:
        if 0.0 < lo < 1.0 and not float(lo).is_integer():
            raise ValueError(f"window {lo},{hi} mixes a fraction and a percentile; give both as one or the other")
        lo, hi = lo / 100.0, hi / 100.0
    if lo >= hi:
        raise ValueError(f"window needs lo < hi; got {window[0]},{window[1]}")
    return lo, hi


class EL2NWindowPruner(TrainedScorePruner):
    """Per-class EL2N percentile window."""

    name = "el2n-window"
    statistic = "el2n"
    purpose = "el2n"
    paper_mode = "init"  # Sundar et al., Algorithm 1: the window seeds the images; experts use the full set

    @dataclass(frozen=True)
    class Options(ScorerOptions):
        window: tuple[float, float] = option((0.70, 0.80), "ascending EL2N percentile band lo,hi (fractions or percentiles)")
        score_epoch: int = option(20, "epoch whose EL2N is used (Data Diet: 20), capped by epochs")
        epochs: int = option(50, "scorer training length (the MTT expert length)")
        models: int = option(10, "independently seeded scorers averaged (Data Diet: 10)")

        def counts(self):
            return {"epochs": self.epochs, "models": self.models, "score_epoch": self.score_epoch}

        def validate(self):
            ScorerOptions.validate(self)
            window_fractions(self.window)

        def fractions(self) -> tuple[float, float]:
            return window_fractions(self.window)

        def implied_keep(self) -> float:
            """The kept fraction ``hi - lo``; the runner rejects a disagreeing ``--keep``."""
            lo, hi = self.fractions()
            return hi - lo

    budgets = {"quick": {"models": 3, "score_epoch": 5, "batch": 64, "scorer_options": {"width": 32}}}

    def train_epochs(self) -> int:
        # no lr decay in the recipe: training to the score epoch equals reading that checkpoint
        return min(self.options.score_epoch, self.options.epochs)

    @classmethod
    def implied_keep(cls, options) -> float:
        return options.implied_keep()

    def runs(self) -> int:
        return self.options.models

    def selection(self, keep):
        return {**super().selection(keep), "keep": None, "window": self.options.fractions()}
