"""Evaluation protocols: train fresh networks on a (distilled or pruned) set, test once.

Each protocol is registered under the name of the paper tables it reproduces
(algorithms.md section 6); all train with SGD (momentum 0.9, weight decay 5e-4, batch 256),
hard or soft labels, and test once after the final epoch -- nothing is selected by test
accuracy.

* ``dc-step`` -- DC (Zhao et al., ICLR 2021): E = 300, no augmentation, lr 0.01.
* ``dsa-step`` -- DSA (Zhao & Bilen, ICML 2021) and DM (Zhao & Bilen, WACV 2023); the default
  (``dsa-step-1000``): E = 1000, independent DSA, lr 0.01, or the distiller's learned lr (MTT).
* ``mtt-step-lr`` -- MTT (Cazenavette et al., CVPR 2022): E = 1000, DSA, the learned lr.
* ``glad-ema-cosine`` -- GLaD (Cazenavette et al., CVPR 2023), LD3M, Moser et al.: 1000 epochs,
  lr 1e-3 (VGG11 1e-4), linear warm-up then cosine, DSA, tested on an EMA of the weights.

The step protocols follow the DC/DSA/MTT reference code exactly: ``range(E + 1)`` passes over
the set, and after pass ``E//2 + 1`` (0-based) the lr is multiplied by 0.1 with the optimiser
re-created (momentum reset).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Literal, Optional

import torch
import torch.nn.functional as F

from pd_plugins.training import accel
from pd_plugins.errors import OptionsError
from pd_plugins.options import as_dict, option
from pd_plugins.strategies import Evaluator
from pd_plugins.types import EvalResult, ImageDataset


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against hard (N,) or soft (N, K) targets."""
    if target.dim() == 1:
        return F.cross_entropy(logits, target)
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


#: test batch of :func:`accuracy`
ACCURACY_BATCH = 1024


@torch.no_grad()
def accuracy(net: torch.nn.Module, data: ImageDataset, device: str, batch: int = ACCURACY_BATCH) -> float:
    """Top-1 accuracy of ``net`` on ``data`` (eval mode, batched; counted on the device, read once)."""
    net.eval()
    normalise = data.normaliser(device)
    y_all = data.hard_labels.to(device)
    correct = torch.zeros((), dtype=torch.long, device=y_all.device)
    for start in range(0, len(data), batch):
        x = normalise(data.pixels[start:start + batch].to(device, non_blocking=True))
        correct += (net(x).argmax(1) == y_all[start:start + batch]).sum()
    return int(correct) / max(len(data), 1)


def train_network(net, train: ImageDataset, ctx, *, epochs: int, lr: float, momentum: float, weight_decay: float,
                  batch: int, decay_epoch: Optional[int], augmenter, generator: torch.Generator, desc: str = "train",
                  lr_factor: Optional[Callable[[int], float]] = None, after_epoch: Optional[Callable[[], None]] = None,
                  on_batch=None, teacher=None):
    """Train ``net`` on ``train`` for ``epochs`` passes; returns the final training loss.

    ``decay_epoch``: the first (0-based) pass at ``lr * 0.1``, with the optimiser re-created.
    ``lr_factor(epoch)``: the lr of each pass is ``lr * lr_factor(epoch)`` (momentum kept), as a
    per-epoch torch LR scheduler sets it. ``after_epoch`` runs after every pass (e.g. an EMA update).
    ``on_batch(positions, logits, labels)``, when given, sees every training batch's logits before
    its update (e.g. to count forgetting events). ``teacher`` (a :class:`~pd_plugins.training.teacher.Teacher`)
    relabels every augmented batch with its softened predictions, and the loss compares them with the
    student's logits at the same temperature, times T^2 (SRe2L/RDED); the set's own labels are then unused.
    """
    from pd_plugins.training.device import DevicePixels

    device = ctx.device
    source = DevicePixels(train.pixels, device)  # on the device when they fit, else pinned batches
    normalise = train.normaliser(device)
    y_all = train.labels.to(device)
    n = len(train)

    def make_opt(rate):
        return torch.optim.SGD(net.parameters(), lr=rate, momentum=momentum, weight_decay=weight_decay)

    opt = make_opt(lr)
    last = float("nan")
    for ep in ctx.progress(range(epochs), total=epochs, desc=desc):
        if decay_epoch is not None and ep == decay_epoch:
            opt = make_opt(lr * 0.1)
        if lr_factor is not None:
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(ep)
        net.train()
        perm = torch.randperm(n, generator=generator)  # drawn on the host: the same order on every device
        perm_device = perm.to(device, non_blocking=True)
        for start in range(0, n, batch):
            idx = perm_device[start:start + batch]
            x, y = normalise(source.take(perm[start:start + batch])), y_all[idx]
            if augmenter is not None:
                x = augmenter(x, generator)
            logits = accel.forward(net, x, ctx)
            if on_batch is not None:
                on_batch(idx, logits.detach(), y)
            if teacher is not None:  # x T^2 keeps the gradient scale of T = 1 (Hinton et al.)
                t = teacher.temperature
                loss = soft_cross_entropy(logits.float() / t, teacher.targets(x)) * t * t
            else:
                loss = soft_cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last = loss.detach()  # read once at the end: a read per batch would wait for the device
        if after_epoch is not None:
            after_epoch()
    return float(last)


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
              epochs: Optional[int] = None, desc: str = "train", on_batch=None) -> float:
        """Train ``net`` on ``data`` for ``epochs`` (default: the recipe's); returns the final loss."""
        if augmenter is None and self.augment:
            augmenter = ctx.make_augmenter(data)
        return train_network(net, data, ctx, epochs=self.epochs if epochs is None else epochs, lr=self.lr,
                             momentum=self.momentum, weight_decay=self.weight_decay, batch=self.batch,
                             decay_epoch=None, augmenter=augmenter, generator=generator, desc=desc,
                             on_batch=on_batch)


def step_schedule(epochs: int) -> tuple[int, int]:
    """``(passes, first decayed pass)`` of the DC/DSA/MTT step schedule with E = ``epochs``.

    The reference code runs ``for ep in range(E + 1)`` and decays after pass ``ep == E//2 + 1``,
    so ``E + 1`` passes are trained and pass ``E//2 + 2`` is the first at lr x 0.1.
    """
    return epochs + 1, epochs // 2 + 2


GLAD_WARMUP_START = 1e-7


def glad_lr_factor(epoch: int, epochs: int) -> float:
    """GLaD's lr factor for 0-based ``epoch`` of ``epochs``: ``LinearLR(1e-7 -> 1, E//2 steps)``, stepped
    after every epoch, then, from epoch ``E//2 + 1``, ``CosineAnnealingLR(T_max=E//2)`` (to 0 over E/2)."""
    half = epochs // 2
    if epoch <= half:
        return GLAD_WARMUP_START + (1.0 - GLAD_WARMUP_START) * epoch / half
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - half - 1) / half))


def labels_option():
    return option("own", "training targets: own (the set's labels, soft when the distiller learned them), hard "
                  "(their argmax) or teacher (a teacher's softened predictions on every augmented batch, SRe2L/RDED)",
                  recorded_at_default=False)


def teacher_temperature_option():
    return option(4.0, "with labels=teacher: the temperature T of the teacher's and the student's softmax",
                  recorded_at_default=False)


def teacher_epochs_option():
    return option(50, "with labels=teacher: epochs the teacher trains on the real training split (cached)",
                  recorded_at_default=False)


def check_label_options(opts) -> None:
    """Shared checks of the label options (``validate`` of every evaluator that has them)."""
    if opts.teacher_temperature <= 0 or opts.teacher_epochs < 1:
        raise ValueError("teacher_temperature must be > 0 and teacher_epochs >= 1")


class StepEvaluator(Evaluator):
    """DSA/DM protocol (``dsa-step``, the recommended default ``dsa-step-1000``).

    Reproduces the DSA (Zhao & Bilen, ICML 2021) and DM (Zhao & Bilen, WACV 2023) ConvNet
    tables: E = 1000 (``range(E + 1)`` passes), lr 0.01 -- or the distiller's learned lr when
    it has one (MTT), recorded as ``lr_used`` -- x0.1 after pass E//2 + 1 with the optimiser
    re-created, independent DSA on every training batch, one test after the last pass.
    """

    name = "dsa-step"
    memory_options = ("batch",)
    protocol_revision = 2  # 2: E + 1 passes and the decay after pass E//2 + 1, as in the reference code

    @dataclass(frozen=True)
    class Options:
        epochs: int = option(1000, "E: the reference code trains E + 1 passes (DSA/DM protocol: 1000; DC: 300)")
        lr: float = option(0.01, "SGD learning rate (a distiller's learned lr replaces it when use_learned_lr)")
        momentum: float = option(0.9, "SGD momentum")
        weight_decay: float = option(5e-4, "SGD weight decay")
        batch: int = option(256, "training batch size")
        augment: bool = option(True, "independent DSA on every training batch")
        use_learned_lr: bool = option(True, "train with the distiller's learned lr (MTT) when it has one")
        repeats: int = option(5, "fresh networks per set (overridden by --eval-repeats)")
        labels: Literal["own", "hard", "teacher"] = labels_option()
        teacher_temperature: float = teacher_temperature_option()
        teacher_epochs: int = teacher_epochs_option()

        def validate(self):
            if self.epochs < 1 or self.batch < 1 or self.repeats < 1:
                raise ValueError("epochs, batch and repeats must be >= 1")
            check_label_options(self)

    budgets = {"quick": {"epochs": 300, "repeats": 3}}

    def learning_rate(self, lr: Optional[float], model_name: str) -> tuple[float, str]:
        """``(lr, source)`` for training ``model_name``: the distiller's learned ``lr`` when there is
        one and the options allow it, else the ``lr`` option."""
        if lr is not None and self.options.use_learned_lr:
            return float(lr), "learned"
        return float(self.options.lr), "option"

    def schedule(self) -> dict:
        """The training schedule, recorded in every result."""
        passes, decay = step_schedule(self.options.epochs)
        return {"passes": passes, "decay_from_pass": decay}

    def cost(self, train, test, ctx, *, lr=None):
        """``repeats`` fresh networks trained on ``train`` for the schedule's passes, each tested once
        (a ``labels=teacher`` teacher's training is not included)."""
        from pd_plugins.planning.probes import trained_networks_cost

        opts = self.options
        return [trained_networks_cost(
            "eval", lambda: ctx.make_model(train.channels, train.num_classes, train.im_size), train, ctx,
            role="evaluation network", networks=opts.repeats, epochs=self.schedule()["passes"], batch=opts.batch,
            lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay, augment=opts.augment, tested=test,
            train_network=train_network,
            test_batch=ACCURACY_BATCH, lower=("-E batch",),
            note="" if opts.labels != "teacher" else "the teacher's training is not included")]

    def train_one(self, net, train, ctx, *, lr: float, augmenter, generator, desc: str, teacher=None):
        """Train ``net``; returns ``(network to test, final training loss)``."""
        opts = self.options
        passes, decay = step_schedule(opts.epochs)
        loss = train_network(net, train, ctx, epochs=passes, lr=lr, momentum=opts.momentum,
                             weight_decay=opts.weight_decay, batch=opts.batch, decay_epoch=decay,
                             augmenter=augmenter, generator=generator, desc=desc, teacher=teacher)
        return net, loss

    def targets(self, train: ImageDataset, teacher):
        """``(training set, teacher or None, label mode used)`` under the ``labels`` option."""
        opts = self.options
        if opts.labels == "teacher":
            if teacher is None:
                raise OptionsError("labels=teacher needs a teacher trained on the real training split, which this "
                                   "caller does not pass (pd-run, pd-run eval RUN and pd-run eval RUN --metrics do)")
            return train, teacher, f"teacher (T={teacher.temperature:g})"
        if opts.labels == "hard" and train.soft:
            return dataclasses.replace(train, labels=train.hard_labels), None, "hard (argmax of soft)"
        return train, None, "soft" if train.soft else "hard"

    def evaluate(self, train, test, ctx, *, lr=None, model=None, repeats=None, repeat_index=None, teacher=None):
        """Train ``repeats`` fresh nets (or only repeat number ``repeat_index``, seeded as in a full run).

        ``teacher``: with ``labels=teacher``, the :class:`~pd_plugins.training.teacher.Teacher` whose predictions
        are the targets (:func:`~pd_plugins.training.teacher.teacher_inputs` builds it from these options)."""
        opts = self.options
        model_name = model or ctx.model
        rate, source = self.learning_rate(lr, model_name)
        train, teacher, labels_used = self.targets(train, teacher if opts.labels == "teacher" else None)
        n_rep = int(repeats or opts.repeats)
        from pd_plugins.executor import run_tasks

        reps = list(range(n_rep) if repeat_index is None else [int(repeat_index)])
        total = n_rep if repeat_index is None else "-"
        done = dict(run_tasks(ctx, _step_repeat, [(r, (r,)) for r in reps],
                              shared=(self, train, test, rate, model, total, teacher)))
        losses = [done[r][0] for r in reps]
        accs = [done[r][1] for r in reps]
        return EvalResult(
            protocol=self.name, model=model_name, accs=accs,
            options={**as_dict(opts), "lr_used": rate, "lr_source": source, "repeats": len(accs),
                     "labels_used": labels_used},
            meta={"final_train_loss": losses, "schedule": self.schedule()},
        )


def _step_repeat(ctx, evaluator: StepEvaluator, train: ImageDataset, test: ImageDataset, rate: float,
                 model: Optional[str], total, teacher, r: int) -> tuple[float, float]:
    """Network ``r`` of a step-family protocol (one executor task): ``(final train loss, test accuracy)``.

    Seeded by ``(model, r)`` only, so a repeat gives the same network inline, in a pool or on Ray."""
    model_name = model or ctx.model
    aug = ctx.make_augmenter(train) if evaluator.options.augment else None
    with ctx.fork_rng("eval-net", model_name, r):
        net = ctx.make_model(train.channels, train.num_classes, train.im_size, name=model)
    tested, loss = evaluator.train_one(net, train, ctx, lr=rate, augmenter=aug,
                                       generator=ctx.generator("eval-train", model_name, r),
                                       desc=f"eval {model_name} {r + 1}/{total}", teacher=teacher)
    return loss, accuracy(tested, test, ctx.device)


class DCStepEvaluator(StepEvaluator):
    """DC protocol (``dc-step``): reproduces the DC paper's (Zhao et al., ICLR 2021) ConvNet tables
    for the sets evaluated without augmentation (CIFAR-10/100, SVHN): E = 300 (``range(E + 1)``
    passes), lr 0.01, x0.1 after pass E//2 + 1 with the optimiser re-created, no augmentation.
    DC's MNIST/Fashion-MNIST rows used its CPU scipy "DC-aug" for 1000 epochs, which is not
    ported (algorithms.md section 6): evaluate those with ``dsa-step``.
    """

    name = "dc-step"

    @dataclass(frozen=True)
    class Options(StepEvaluator.Options):
        epochs: int = option(300, "E: the reference code trains E + 1 passes (DC without augmentation: 300)")
        augment: bool = option(False, "independent DSA on every training batch (DC's protocol: none)")
        use_learned_lr: bool = option(False, "train with the distiller's learned lr (MTT) when it has one")

    budgets = {"quick": {"repeats": 3}}


class MTTStepEvaluator(StepEvaluator):
    """MTT protocol (``mtt-step-lr``): reproduces MTT's (Cazenavette et al., CVPR 2022) ConvNet
    tables: the learned lr eta, E = 1000 (``range(E + 1)`` passes), x0.1 after pass E//2 + 1 with
    the optimiser re-created, independent DSA. A set without a learned lr is an error. MTT
    reports the best of its evaluation points during distillation (test-set selection); this
    evaluates the final set only.
    """

    name = "mtt-step-lr"

    def learning_rate(self, lr: Optional[float], model_name: str) -> tuple[float, str]:
        if lr is None and self.options.use_learned_lr:
            raise OptionsError(
                "evaluator 'mtt-step-lr' trains with the distiller's learned lr, and this set has none "
                "(only MTT learns one); use dsa-step, or -E use_learned_lr=false for the fixed lr"
            )
        return super().learning_rate(lr, model_name)


class GladEvaluator(StepEvaluator):
    """GLaD protocol (``glad-ema-cosine``): reproduces GLaD's (Cazenavette et al., CVPR 2023)
    cross-architecture tables and those of LD3M and Moser et al. that copy its protocol.

    E = 1000 epochs (``range(E)``), lr 1e-3 (VGG11: 1e-4) whatever the distiller learned, a
    per-epoch ``LinearLR`` warm-up from 1e-7x over E//2 epochs, then ``CosineAnnealingLR`` to 0
    over E//2, independent DSA, and an EMA of the weights (and float buffers) updated after every
    epoch as GLaD's ``ema_pytorch.EMA(beta=0.995, power=1, update_after_step=0)`` does: a copy
    at the first update, then decay ``min(0.995, n / (n + 1))`` at update ``n``. The EMA network
    is tested.
    """

    name = "glad-ema-cosine"
    protocol_revision = 1

    @dataclass(frozen=True)
    class Options:
        epochs: int = option(1000, "training epochs (GLaD: 1000): linear warm-up over E//2, cosine over E//2")
        lr: float = option(1e-3, "peak SGD learning rate for every model but VGG11")
        vgg11_lr: float = option(1e-4, "peak SGD learning rate for VGG11")
        momentum: float = option(0.9, "SGD momentum")
        weight_decay: float = option(5e-4, "SGD weight decay")
        batch: int = option(256, "training batch size")
        augment: bool = option(True, "independent DSA on every training batch")
        ema_decay: float = option(0.995, "the EMA's decay cap (beta)")
        repeats: int = option(5, "fresh networks per set (overridden by --eval-repeats)")
        labels: Literal["own", "hard", "teacher"] = labels_option()
        teacher_temperature: float = teacher_temperature_option()
        teacher_epochs: int = teacher_epochs_option()

        def validate(self):
            if self.epochs < 2 or self.batch < 1 or self.repeats < 1:
                raise ValueError("epochs must be >= 2 (warm-up and cosine halves), batch and repeats >= 1")
            if not 0.0 <= self.ema_decay < 1.0:
                raise ValueError("ema_decay must be in [0, 1)")
            check_label_options(self)

    budgets = {"quick": {"epochs": 300, "repeats": 3}}

    def learning_rate(self, lr: Optional[float], model_name: str) -> tuple[float, str]:
        """GLaD's fixed per-model lr (``get_eval_lrs``); a learned lr is not used."""
        if model_name.lower() == "vgg11":
            return float(self.options.vgg11_lr), "protocol"
        return float(self.options.lr), "protocol"

    def schedule(self) -> dict:
        return {"passes": self.options.epochs, "warmup_epochs": self.options.epochs // 2, "ema": True}

    def cost(self, train, test, ctx, *, lr=None):
        """The step protocol's cost, plus the EMA copy of the network."""
        from pd_plugins.planning.costs import parameter_bytes

        costs = super().cost(train, test, ctx, lr=lr)
        costs[0].resident["EMA copy of the network"] = parameter_bytes(costs[0].passes[0].net)
        return costs

    def train_one(self, net, train, ctx, *, lr: float, augmenter, generator, desc: str, teacher=None):
        from torch.optim.swa_utils import AveragedModel

        opts = self.options
        beta = opts.ema_decay

        def ema_step(avg, current, n):
            if not avg.is_floating_point():
                return current
            return avg + (current - avg) * (1.0 - min(beta, float(n) / (float(n) + 1.0)))

        ema = AveragedModel(net, avg_fn=ema_step, use_buffers=True)
        loss = train_network(net, train, ctx, epochs=opts.epochs, lr=lr, momentum=opts.momentum,
                             weight_decay=opts.weight_decay, batch=opts.batch, decay_epoch=None,
                             augmenter=augmenter, generator=generator, desc=desc,
                             lr_factor=lambda ep: glad_lr_factor(ep, opts.epochs),
                             after_epoch=lambda: ema.update_parameters(net), teacher=teacher)
        return ema.module, loss
