"""Matching objectives and the pixel-space distiller that optimises images under them.

An :class:`Objective` turns the current synthetic images into a loss. Pixel distillers
(``dm``, ``dc``, ``dsa``, ``mtt``) optimise the images directly; generative-prior distillers
(``glad``, ``ld3m``) decode latents into images and reuse the very same objectives, so each
objective is written once.

One *iteration* consists of ``steps_per_iteration()`` image updates; the objective is told
when an iteration begins (DC/DM draw a fresh network), asked for a loss before each update,
and told after each update (DC trains its network on the synthetic set in between).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from pd_plugins.pipeline.context import RunContext
from pd_plugins.types import ImageDataset


class Objective:
    """A distillation loss over synthetic images (graph-connected to the caller's leaves)."""

    def extra_parameters(self) -> list[dict]:
        """Extra learnable tensors as SGD param-group dicts, e.g.
        ``{"params": [lr], "lr": lr_lr, "momentum": 0.5}`` (MTT's synthetic lr).

        A group may declare a constraint with ``"projection": fn`` (``fn(tensor) -> tensor``):
        the optimiser applies it to every tensor of the group after each update (see
        :class:`SyntheticOptimiser`), so a constraint costs no rendered images.
        """
        return []

    def setup(self, data: ImageDataset, ipc: int, labels: torch.Tensor, ctx: RunContext) -> None:
        """Called once before the first iteration with the real pool and synthetic labels."""

    def steps_per_iteration(self) -> int:
        return 1

    def begin_iteration(self, it: int) -> None:
        """Draw per-iteration state (fresh networks, expert choice, ...)."""

    def loss(self, images: torch.Tensor, it: int, step: int) -> tuple[torch.Tensor, dict]:
        """The loss to minimise and extra metrics to log."""
        raise NotImplementedError

    def after_step(self, images: torch.Tensor, it: int, step: int) -> None:
        """Called after each image update with the detached images. A latent distiller renders
        the whole synthetic set for it, so override it only when the images are needed; a
        constraint on a parameter is a group's ``projection`` (:meth:`extra_parameters`)."""

    def learned_lr(self) -> Optional[float]:
        return None

    def describe(self) -> dict:
        """What the objective settled on during setup (recorded in ``DistillResult.meta``)."""
        return {}

    def learned_labels(self) -> Optional[torch.Tensor]:
        """Learned (soft) labels replacing the fixed hard ones in the result, if any."""
        return None

    def state(self) -> dict:
        """Resumable objective state (tensors and plain values)."""
        return {}

    def load_state(self, state: dict) -> None:
        pass


Projection = Callable[[torch.Tensor], torch.Tensor]


def split_projections(groups: list[dict]) -> tuple[list[dict], list[tuple[list[torch.Tensor], Projection]]]:
    """``groups`` without their ``projection`` entries, and the (tensors, projection) pairs.

    The callables stay out of the optimiser, so its ``state_dict()`` holds tensors and plain
    values only (a checkpoint loads with ``weights_only=True``).
    """
    plain, projections = [], []
    for group in groups:
        group = dict(group)
        group["params"] = list(group["params"])
        fn = group.pop("projection", None)
        if fn is not None:
            if not callable(fn):
                raise TypeError(f"param group projection must be callable, got {type(fn).__name__}")
            projections.append((group["params"], fn))
        plain.append(group)
    return plain, projections


class SyntheticOptimiser:
    """The learnable synthetic tensors (images, or a generator's latents), their SGD
    optimiser, the objective's extra parameters (e.g. MTT's lr), and the checkpointed loop.

    Pixel and generative-prior distillers differ only in how one step computes gradients;
    state, resume, the learned-lr metric and the divergence guard live here once. A group
    (of ``groups`` or of the objective's extra parameters) with a ``projection`` entry is
    projected after every :meth:`step`, under ``no_grad``.
    """

    def __init__(self, objective: Objective, tensors: dict[str, torch.Tensor], groups: list[dict], momentum: float):
        self.objective = objective
        self.tensors = tensors
        groups, projections = split_projections(groups)
        self.opt = torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=momentum)
        extra, extra_projections = split_projections(objective.extra_parameters())
        self.extra_opt = torch.optim.SGD(extra, lr=1.0) if extra else None
        self.projections = projections + extra_projections

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.extra_opt is not None:
            self.extra_opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        """One SGD update of every group, then each declared projection in place."""
        self.opt.step()
        if self.extra_opt is not None:
            self.extra_opt.step()
        with torch.no_grad():
            for tensors, project in self.projections:
                for t in tensors:
                    t.copy_(project(t))

    def state(self) -> dict:
        return {"tensors": {k: v.detach().cpu().clone() for k, v in self.tensors.items()},
                "opt": self.opt.state_dict(),
                "extra_opt": self.extra_opt.state_dict() if self.extra_opt is not None else None,
                "objective": self.objective.state()}

    def load_state(self, state: dict) -> None:
        with torch.no_grad():
            for k, v in self.tensors.items():
                v.copy_(state["tensors"][k].to(v.device))
        self.opt.load_state_dict(state["opt"])
        if self.extra_opt is not None and state.get("extra_opt") is not None:
            self.extra_opt.load_state_dict(state["extra_opt"])
        self.objective.load_state(state.get("objective", {}))

    def run(self, ctx: RunContext, iterations: int, step: Callable[[int], dict], *, desc: str, log_every: int) -> list[dict]:
        """``iterate`` with resume, the learned lr logged as ``syn_lr`` and guarded (finite, > 0)."""
        from pd_plugins.distillation.synthetic import iterate

        def logged_step(it: int) -> dict:
            metrics = step(it)
            lr = self.objective.learned_lr()
            if lr is not None:
                metrics["syn_lr"] = lr
            return metrics

        return iterate(ctx, iterations, logged_step, self.state, self.load_state, desc=desc, log_every=log_every,
                       watch=("loss", "syn_lr"), positive=("syn_lr",))


def image_update(objective: Objective, images: torch.Tensor, optimiser: SyntheticOptimiser, it: int,
                 step: int) -> tuple[torch.Tensor, dict]:
    """Step ``step`` of iteration ``it``: the objective's loss, its backward and one optimiser update;
    returns the loss and the objective's extra metrics."""
    loss, extra_metrics = objective.loss(images, it, step)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    return loss, extra_metrics


def run_iteration(objective: Objective, images: torch.Tensor, optimiser: SyntheticOptimiser, it: int,
                  steps: Optional[int] = None) -> dict:
    """One iteration: ``steps`` (default all) image updates; returns the mean loss and extra metrics."""
    objective.begin_iteration(it)
    metrics: dict = {}
    total = 0.0
    n = objective.steps_per_iteration() if steps is None else steps
    for s in range(n):
        loss, extra_metrics = image_update(objective, images, optimiser, it, s)
        objective.after_step(images.detach(), it, s)
        total = total + loss.detach().double()  # summed on the device: the loop reads it once an iteration
        metrics.update(extra_metrics)
    metrics["loss"] = total / n
    return metrics


def distill_pixels(objective: Objective, data: ImageDataset, init_pool: ImageDataset, ipc: int, ctx: RunContext, *,
                   name: str, iterations: int, lr_img: float, momentum: float, init: str, log_every: int,
                   options: dict):
    """Optimise synthetic images under ``objective`` with SGD; shared by every pixel distiller."""
    from pd_plugins.distillation.synthetic import class_major_labels, initial_images
    from pd_plugins.types import DistillResult

    images = initial_images(init_pool, ipc, init, ctx.generator(name, "init"), ctx.device).requires_grad_(True)
    labels = class_major_labels(data.num_classes, ipc)
    objective.setup(data, ipc, labels, ctx)
    optimiser = SyntheticOptimiser(objective, {"images": images}, [{"params": [images], "lr": lr_img}], momentum)
    history = optimiser.run(ctx, iterations, lambda it: run_iteration(objective, images, optimiser, it),
                            desc=name, log_every=log_every)
    learned = objective.learned_labels()
    return DistillResult(images=images.detach().cpu(), labels=learned if learned is not None else labels, ipc=ipc,
                         distiller=name, options=options, lr=objective.learned_lr(), history=history,
                         source=data.fingerprint(), meta=objective.describe())
