"""Coreset selection: the real-image baselines of the distillation tables (algorithms.md 2.7).

All three selections share one step -- train a network on the whole pool with a
:class:`~pd_plugins.pruning.scoring.ScorerRecipe` (:func:`pd_plugins.pruning.scoring.train_scorer`) -- and then
pick ``ipc`` samples per class:

* :func:`herding` (Welling 2009; iCaRL; DC's table): greedily add the sample that brings the mean
  of the selected penultimate features closest to the class mean feature;
* :func:`k_center_greedy` (Sener & Savarese 2018): start from the sample nearest the class mean,
  then repeatedly add the sample farthest from its nearest selected sample;
* :func:`forgetting_events` (Toneva et al. 2019): count correct -> incorrect transitions between
  consecutive presentations while the network trains; :func:`most_forgotten` keeps the highest
  counts (samples never classified correctly rank first, as in Toneva et al.).

The selections are pure functions of features or counts (no randomness except the seeded
tie-break of :func:`most_forgotten`), so they are tested directly.
"""
from __future__ import annotations

from typing import Callable

import torch

from pd_plugins.errors import DataError, OptionsError
from pd_plugins.training.features import embed_dataset as embed  # noqa: F401 (the old name)
from pd_plugins.types import ImageDataset


# ----------------------------------------------------------------------------------------
# selections within one class

def herding(features: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of ``k`` rows of ``features`` (n, d) chosen by greedy mean matching.

    Step t adds the unselected row i minimising ``||mu - (sum_selected + f_i) / t||`` where
    ``mu`` is the mean of all rows; ties go to the lowest position. Deterministic.
    """
    f = features.double()
    n = f.shape[0]
    _check_k(k, n)
    mu = f.mean(0)
    chosen: list[int] = []
    total = torch.zeros_like(mu)
    free = torch.ones(n, dtype=torch.bool)
    for t in range(1, k + 1):
        dist = ((mu - (total + f) / t) ** 2).sum(1)
        dist[~free] = float("inf")
        i = int(torch.argmin(dist))
        chosen.append(i)
        free[i] = False
        total = total + f[i]
    return torch.tensor(chosen, dtype=torch.long)


def k_center_greedy(features: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of ``k`` rows of ``features`` (n, d) chosen by greedy k-center.

    The first is the row nearest the mean; every next one maximises the distance to its nearest
    already-chosen row (ties: lowest position). Deterministic.
    """
    f = features.double()
    n = f.shape[0]
    _check_k(k, n)
    first = int(torch.argmin(((f - f.mean(0)) ** 2).sum(1)))
    chosen = [first]
    nearest = ((f - f[first]) ** 2).sum(1)
    nearest[first] = -1.0
    for _ in range(1, k):
        i = int(torch.argmax(nearest))
        chosen.append(i)
        nearest = torch.minimum(nearest, ((f - f[i]) ** 2).sum(1))
        nearest[chosen] = -1.0
    return torch.tensor(chosen, dtype=torch.long)


def forgetting_events(correct: torch.Tensor) -> torch.Tensor:
    """Forgetting counts from a (presentations, n) bool matrix of per-presentation correctness.

    A forgetting event is a correct presentation followed by an incorrect one. A sample never
    classified correctly gets ``presentations`` -- more than any learned sample can reach -- so
    it ranks as the most forgotten (Toneva et al.).
    """
    if correct.dim() != 2 or correct.shape[0] < 2:
        raise DataError("forgetting events need a (presentations >= 2, n) correctness matrix")
    c = correct.bool()
    counts = (c[:-1] & ~c[1:]).sum(0).to(torch.float64)
    counts[~c.any(0)] = float(c.shape[0])
    return counts


def most_forgotten(counts: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Positions of the ``k`` highest counts; equal counts are ordered by a seeded permutation."""
    n = counts.shape[0]
    _check_k(k, n)
    perm = torch.randperm(n, generator=generator)
    order = torch.argsort(counts[perm], descending=True, stable=True)
    return perm[order[:k]]


def _check_k(k: int, n: int) -> None:
    if k < 1:
        raise OptionsError(f"a coreset needs at least one sample per class, got {k}")
    if k > n:
        raise DataError(f"cannot select {k} samples from a class of {n}")


# ----------------------------------------------------------------------------------------
# shared steps: per-class driver, the trained network, its features

def select_per_class(data: ImageDataset, ipc: int, pick: Callable[[int, torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
    """Per class, positions into ``data``: ``pick(c, class_positions)`` returns ``ipc`` local positions."""
    chunks = []
    for c, positions in enumerate(data.by_class()):
        if positions.numel() < ipc:
            raise DataError(f"class {c} has {positions.numel()} samples in the pool; a coreset of {ipc} per class "
                            "needs at least that many (lower --ipc or keep more)")
        chunks.append(positions[pick(c, positions)])
    return chunks


def train_on_pool(data: ImageDataset, ctx, recipe, on_batch=None) -> torch.nn.Module:
    """The network every coreset selection starts from: ``recipe`` trained on the whole pool."""
    from pd_plugins.pruning.scoring import train_scorer

    return train_scorer(data, ctx, recipe, ("coreset",), on_batch=on_batch)


class PresentationLog:
    """Records, for every training batch, whether each sample was classified correctly.

    Pass :meth:`__call__` as ``on_batch`` to the training loop; every epoch presents each sample
    once, so row e of :attr:`correct` holds epoch e's presentations.
    """

    def __init__(self, n: int, epochs: int):
        self.correct = torch.zeros(epochs, n, dtype=torch.bool)
        self.seen = torch.zeros(n, dtype=torch.long)

    def __call__(self, positions: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        positions = positions.cpu()
        hit = (logits.argmax(1) == (labels.argmax(1) if labels.dim() == 2 else labels)).cpu()
        self.correct[self.seen[positions], positions] = hit
        self.seen[positions] += 1

    def counts(self) -> torch.Tensor:
        if not bool((self.seen == self.correct.shape[0]).all()):
            raise DataError("forgetting: not every sample was presented once per epoch")
        return forgetting_events(self.correct)
