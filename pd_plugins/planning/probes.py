"""Timed units the strategies' ``cost`` hooks share: an SGD training step, an inference batch and a
distillation iteration, each at the run's real shapes and built on its first call.

Every unit runs the code a real run runs (``train_network``, ``accel.forward``, ``run_iteration``)
on stand-in inputs of the same shapes; nothing it computes is kept.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from pd_plugins.planning.costs import TimedUnit

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from pd_plugins.distillation.objectives import Objective
    from pd_plugins.pipeline.context import RunContext
    from pd_plugins.planning.costs import StageCost
    from pd_plugins.types import ImageDataset


def _first(data: "ImageDataset", n: int) -> "ImageDataset":
    import torch

    return data.subset(torch.arange(min(n, len(data))))


def training_step(what: str, build: Callable[[], "torch.nn.Module"], data: "ImageDataset", ctx: "RunContext", *,
                  batch: int, count: float, train_network: Callable, lr: float = 0.01, momentum: float = 0.0,
                  weight_decay: float = 0.0, augment: bool = True) -> TimedUnit:
    """One SGD step at ``batch`` of a network from ``build()`` on ``data``'s first samples, as
    ``train_network`` (:func:`~pd_plugins.training.evaluate.train_network`, passed in by the caller:
    the evaluation module's own cost hook uses this one) trains (augmentation included)."""
    state: dict = {}

    def run():
        import torch

        if not state:
            state.update(net=build(), batch=_first(data, batch),
                         aug=ctx.make_augmenter(data) if augment else None, gen=torch.Generator().manual_seed(0))
        train_network(state["net"], state["batch"], ctx, epochs=1, lr=lr, momentum=momentum,
                      weight_decay=weight_decay, batch=batch, decay_epoch=None, augmenter=state["aug"],
                      generator=state["gen"], desc="plan")

    return TimedUnit(what, run, count)


def inference_batch(what: str, build: Callable[[], "torch.nn.Module"], data: "ImageDataset", ctx: "RunContext", *,
                    batch: int, count: float) -> TimedUnit:
    """One no-grad forward of ``batch`` of ``data``'s images through a network from ``build()``."""
    state: dict = {}

    def run():
        import torch

        from pd_plugins.training import accel

        if not state:
            net = build()
            net.eval()
            state.update(net=net, x=_first(data, batch).images(None, ctx.device))
        with torch.inference_mode():
            accel.forward(state["net"], state["x"], ctx)

    return TimedUnit(what, run, count)


class ObjectiveProbe:
    """A distillation objective from ``make()`` on noise-initialised synthetic images of the real shape, with
    the SGD optimiser a pixel distiller uses; built on first use. ``setup(objective, labels)`` replaces
    ``objective.setup(data, ipc, labels, ctx)`` (e.g. MTT without trained experts)."""

    def __init__(self, make: Callable[[], "Objective"], data: "ImageDataset", ipc: int, ctx: "RunContext", *,
                 lr_img: float, momentum: float, setup: Optional[Callable[["Objective", "torch.Tensor"], None]] = None):
        self.make, self.data, self.ipc, self.ctx = make, data, ipc, ctx
        self.lr_img, self.momentum, self.setup = lr_img, momentum, setup
        self.objective = self.images = self.optimiser = None
        self.it = 0

    def ready(self) -> "ObjectiveProbe":
        import torch

        from pd_plugins.distillation.objectives import SyntheticOptimiser
        from pd_plugins.distillation.synthetic import class_major_labels

        if self.objective is None:
            objective = self.make()
            labels = class_major_labels(self.data.num_classes, self.ipc)
            c, (h, w) = self.data.channels, self.data.im_size
            images = torch.randn(len(labels), c, h, w, generator=torch.Generator().manual_seed(0))
            images = images.to(self.ctx.device).requires_grad_(True)
            if self.setup is not None:
                self.setup(objective, labels)
            else:
                objective.setup(self.data, self.ipc, labels, self.ctx)
            self.optimiser = SyntheticOptimiser(objective, {"images": images}, [{"params": [images], "lr": self.lr_img}],
                                                self.momentum)
            self.objective, self.images = objective, images
            objective.begin_iteration(0)
        return self

    def unit(self, what: str, count: float) -> TimedUnit:
        """A timed unit of whole iterations (:meth:`iteration`)."""
        return TimedUnit(what, self.iteration, count)

    def iteration(self) -> None:
        """One whole iteration (``run_iteration``)."""
        from pd_plugins.distillation.objectives import run_iteration

        self.ready()
        run_iteration(self.objective, self.images, self.optimiser, self.it)
        self.it += 1

    def update(self) -> None:
        """One image update of the current iteration (loss, backward, step), without ``after_step``."""
        from pd_plugins.distillation.objectives import image_update

        self.ready()
        image_update(self.objective, self.images, self.optimiser, self.it, 0)


def trained_networks_cost(stage: str, build: Callable[[], "torch.nn.Module"], train: "ImageDataset",
                          ctx: "RunContext", *, role: str, networks: int, epochs: int, batch: int, lr: float,
                          momentum: float, weight_decay: float, augment: bool, tested: "ImageDataset",
                          test_batch: int, lower: tuple[str, ...], train_network: Callable,
                          note: str = "") -> "StageCost":
    """The cost of training ``networks`` fresh networks from ``build()`` for ``epochs`` epochs on ``train``
    with SGD (``train_network``), then running each over ``tested`` without a graph in batches of
    ``test_batch``: the pruners' scorers and the evaluation protocols."""
    import math

    from pd_plugins.planning.costs import NetworkPass, StageCost, parameter_bytes, pool_on_device

    net = build()
    shape = (train.channels, *train.im_size)
    aug = ctx.make_augmenter(train) if augment else None
    passes = [NetworkPass(net, shape, min(batch, len(train)), augmenter=aug, role=role, phase="train"),
              NetworkPass(net, shape, min(test_batch, len(tested)), order=0, held=0, train_params=False, role=role,
                          phase="test")]
    units = []
    if epochs:
        units.append(training_step(f"{role} SGD step (batch {min(batch, len(train))})", build, train, ctx, batch=batch,
                                   count=networks * epochs * math.ceil(len(train) / batch), lr=lr, momentum=momentum,
                                   weight_decay=weight_decay, augment=augment, train_network=train_network))
    units.append(inference_batch(f"{role} inference batch ({min(test_batch, len(tested))})", build, tested, ctx,
                                 batch=test_batch, count=networks * math.ceil(len(tested) / test_batch)))
    state = parameter_bytes(net) * (3 if momentum else 2)  # parameters, gradients, momentum buffers
    return StageCost(stage, passes=passes, units=units, lower=lower, note=note,
                     resident={f"{role} parameters and optimiser state": state, **pool_on_device(train, ctx)})
