"""Evaluation protocols: train fresh networks on a (distilled or pruned) set, test once.

``dsa-step`` is the DC/DSA/DM protocol: SGD (momentum 0.9, weight decay 5e-4, batch 256)
at lr 0.01 -- or the distiller's learned lr (MTT) -- for E epochs, the lr multiplied by
0.1 after epoch E//2 with the optimiser re-created (momentum reset), independent DSA on
every training batch, and one test pass after the final epoch. Nothing is selected by
test accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from . import accel
from .options import as_dict, option
from .strategies import Evaluator
from .types import EvalResult, ImageDataset


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against hard (N,) or soft (N, K) targets."""
    if target.dim() == 1:
        return F.cross_entropy(logits, target)
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


@torch.no_grad()
def accuracy(net: torch.nn.Module, data: ImageDataset, device: str, batch: int = 1024) -> float:
    """Top-1 accuracy of ``net`` on ``data`` (eval mode, batched)."""
    net.eval()
    correct = 0
    y_all = data.hard_labels
    for start in range(0, len(data), batch):
        idx = torch.arange(start, min(start + batch, len(data)))
        x = data.images(idx, device)
        correct += int((net(x).argmax(1).cpu() == y_all[idx]).sum())
    return correct / max(len(data), 1)


def train_network(net, train: ImageDataset, ctx, *, epochs: int, lr: float, momentum: float, weight_decay: float,
                  batch: int, decay_epoch: Optional[int], augmenter, generator: torch.Generator, desc: str = "train"):
    """Train ``net`` on ``train`` with the step schedule; returns the final training loss."""
    device = ctx.device
    x_all = train.images(None, device)
    y_all = train.labels.to(device)
    n = x_all.shape[0]

    def make_opt(rate):
        return torch.optim.SGD(net.parameters(), lr=rate, momentum=momentum, weight_decay=weight_decay)

    opt = make_opt(lr)
    last = float("nan")
    for ep in ctx.progress(range(epochs), total=epochs, desc=desc):
        if decay_epoch is not None and ep == decay_epoch:
            opt = make_opt(lr * 0.1)
        net.train()
        perm = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, batch):
            idx = perm[start:start + batch]
            x, y = x_all[idx], y_all[idx]
            if augmenter is not None:
                x = augmenter(x, generator)
            logits = accel.forward(net, x, ctx)
            loss = soft_cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last = float(loss.detach())
    return last


@dataclass(frozen=True)
class TrainRecipe:
    """Constant-lr SGD training on a real set: the MTT expert recipe by default (SGD 0.01,
    momentum 0, weight decay 0, batch 256, independent DSA, no decay). Experts and pruning
    scorers both train with it, so its fields are part of their cache keys."""

    epochs: int = 50
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch: int = 256
    augment: bool = True

    def train(self, net, data: ImageDataset, ctx, generator: torch.Generator, *, augmenter=None,
              epochs: Optional[int] = None, desc: str = "train") -> float:
        """Train ``net`` on ``data`` for ``epochs`` (default: the recipe's); returns the final loss."""
        if augmenter is None and self.augment:
            augmenter = ctx.make_augmenter(data)
        return train_network(net, data, ctx, epochs=self.epochs if epochs is None else epochs, lr=self.lr,
                             momentum=self.momentum, weight_decay=self.weight_decay, batch=self.batch,
                             decay_epoch=None, augmenter=augmenter, generator=generator, desc=desc)


class StepEvaluator(Evaluator):
    """DC/DM step-schedule protocol with DSA during training (``dsa-step``)."""

    name = "dsa-step"

    @dataclass(frozen=True)
    class Options:
        epochs: int = option(1000, "training epochs (DSA/DM protocol: 1000; DC without augmentation: 300)")
        lr: float = option(0.01, "SGD learning rate (a distiller's learned lr replaces it when use_learned_lr)")
        momentum: float = option(0.9, "SGD momentum")
        weight_decay: float = option(5e-4, "SGD weight decay")
        batch: int = option(256, "training batch size")
        augment: bool = option(True, "independent DSA on every training batch")
        use_learned_lr: bool = option(True, "train with the distiller's learned lr (MTT) when it has one")
        repeats: int = option(5, "fresh networks per set (overridden by --eval-repeats)")

        def validate(self):
            if self.epochs < 1 or self.batch < 1 or self.repeats < 1:
                raise ValueError("epochs, batch and repeats must be >= 1")

    budgets = {"quick": {"epochs": 300, "repeats": 3}}

    def evaluate(self, train, test, ctx, *, lr=None, model=None, repeats=None, repeat_index=None):
        """Train ``repeats`` fresh nets (or only repeat number ``repeat_index``, seeded as in a full run)."""
        opts = self.options
        rate = float(lr) if (lr is not None and opts.use_learned_lr) else opts.lr
        n_rep = int(repeats or opts.repeats)
        model_name = model or ctx.model
        from .executor import run_tasks

        reps = list(range(n_rep) if repeat_index is None else [int(repeat_index)])
        total = n_rep if repeat_index is None else "-"
        done = dict(run_tasks(ctx, _step_repeat, [(r, (r,)) for r in reps],
                              shared=(train, test, opts, rate, model, total)))
        losses = [done[r][0] for r in reps]
        accs = [done[r][1] for r in reps]
        return EvalResult(
            protocol=self.name, model=model_name, accs=accs,
            options={**as_dict(opts), "lr_used": rate, "repeats": len(accs)},
            meta={"final_train_loss": losses},
        )


def _step_repeat(ctx, train: ImageDataset, test: ImageDataset, opts, rate: float, model: Optional[str], total,
                 r: int) -> tuple[float, float]:
    """Network ``r`` of the step protocol (one executor task): ``(final train loss, test accuracy)``."""
    model_name = model or ctx.model
    aug = ctx.make_augmenter(train) if opts.augment else None
    with ctx.fork_rng("eval-net", model_name, r):
        net = ctx.make_model(train.channels, train.num_classes, train.im_size, name=model)
    loss = train_network(
        net, train, ctx, epochs=opts.epochs, lr=rate, momentum=opts.momentum,
        weight_decay=opts.weight_decay, batch=opts.batch, decay_epoch=opts.epochs // 2,
        augmenter=aug, generator=ctx.generator("eval-train", model_name, r), desc=f"eval {model_name} {r + 1}/{total}",
    )
    return loss, accuracy(net, test, ctx.device)
