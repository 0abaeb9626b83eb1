"""Paired check that a pixel distiller improves on its own initial images.

Each seed runs the distiller once while recording the state its optimiser starts from (the
initial images, the initial learned lr and labels where it learns them). The distilled set and
that initial set are then evaluated by the same evaluator networks (same initialisation, batch
order and augmentation draws, all derived from the eval seed), so the paired difference is the
effect of distillation alone. A distiller that returns its initial images unchanged has a
difference of exactly 0 on every seed, so it fails any positive margin deterministically.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional


from pd_plugins.pipeline.context import RunContext
from pd_plugins.distillation.objectives import Objective, SyntheticOptimiser, distill_pixels
from pd_plugins.types import DistillResult, ImageDataset


@contextlib.contextmanager
def recording_initial_state():
    """Record every pixel distillation's starting point: yields a list that receives one
    :class:`DistillResult` (images, labels, lr as the optimiser starts) per distillation."""
    starts: list[DistillResult] = []
    original = SyntheticOptimiser.__init__

    def recording_init(self, objective, tensors, groups, momentum):
        original(self, objective, tensors, groups, momentum)
        images = tensors["images"].detach().cpu().clone()
        labels = objective.learned_labels()
        starts.append(DistillResult(images=images, labels=None if labels is None else labels.detach().cpu().clone(),
                                    ipc=0, distiller="initial", lr=objective.learned_lr()))

    SyntheticOptimiser.__init__ = recording_init
    try:
        yield starts
    finally:
        SyntheticOptimiser.__init__ = original


@dataclass
class PairedAccuracy:
    """Test accuracy of distilled and initial sets per seed, evaluated on the same networks."""

    name: str
    seeds: list[int]
    distilled: list[float]
    initial: list[float]

    @property
    def gains(self) -> list[float]:
        return [d - i for d, i in zip(self.distilled, self.initial)]

    @property
    def mean_gain(self) -> float:
        return sum(self.gains) / len(self.gains)

    def assert_improves(self, margin: float) -> None:
        """Fail unless the mean paired gain is at least ``margin`` and no seed gets worse."""
        rows = ", ".join(f"seed {s}: {d:.4f} vs {i:.4f} ({d - i:+.4f})"
                         for s, d, i in zip(self.seeds, self.distilled, self.initial))
        assert self.mean_gain >= margin and min(self.gains) > 0, (
            f"{self.name}: distilled vs its own initial images, mean gain {self.mean_gain:+.4f} "
            f"(margin {margin:+.4f}, every seed must gain): {rows}")


def paired_accuracy(distiller, train: ImageDataset, test: ImageDataset, ipc: int, seeds: Iterable[int], evaluator, *,
                    cache_dir: Path, model_options: Optional[dict] = None) -> PairedAccuracy:
    """Distil ``train`` with ``distiller`` once per seed; evaluate the result and its starting point."""
    kw = {"model_options": model_options} if model_options else {}
    seeds = list(seeds)
    distilled, initial = [], []
    for seed in seeds:
        with recording_initial_state() as starts:
            result = distiller.distill(train, ipc, RunContext(seed=seed, cache_dir=cache_dir, stage="distill", **kw))
        assert len(starts) == 1, f"expected one pixel optimisation, recorded {len(starts)}"
        start = starts[0]
        if start.labels is None:  # hard labels are fixed, so the result's are the initial ones
            start.labels = result.labels
        for res, out in ((result, distilled), (start, initial)):
            ctx = RunContext(seed=seed, stage="eval", **kw)  # same seed: same networks, batches, augmentation
            out.append(evaluator.evaluate(res.as_dataset(train), test, ctx, lr=res.lr).mean)
    return PairedAccuracy(getattr(distiller, "name", type(distiller).__name__), seeds, distilled, initial)


class _NoOpObjective(Objective):
    """A loss with zero gradient: the images never move."""

    def loss(self, images, it, step):
        return (images * 0.0).sum(), {}


class IdentityDistiller:
    """Test control: runs the shared pixel loop from real images with a zero-gradient objective,
    so it returns its initial images unchanged."""

    name = "identity"

    def __init__(self, iterations: int = 2):
        self.iterations = iterations

    def distill(self, data, ipc, ctx, init_pool=None):
        return distill_pixels(_NoOpObjective(), data, data, ipc, ctx, name=self.name, iterations=self.iterations,
                              lr_img=1.0, momentum=0.5, init="real", log_every=1, options={})
