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

from typing import Optional

import torch

from .context import RunContext
from .types import ImageDataset


class Objective:
    """A distillation loss over synthetic images (graph-connected to the caller's leaves)."""

    def extra_parameters(self) -> list[dict]:
        """Extra learnable tensors as SGD param-group dicts, e.g.
        ``{"params": [lr], "lr": lr_lr, "momentum": 0.5}`` (MTT's synthetic lr)."""
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
        """Called after each image update with the detached images."""

    def learned_lr(self) -> Optional[float]:
        return None

    def learned_labels(self) -> Optional[torch.Tensor]:
        """Learned (soft) labels replacing the fixed hard ones in the result, if any."""
        return None

    def state(self) -> dict:
        """Resumable objective state (tensors and plain values)."""
        return {}

    def load_state(self, state: dict) -> None:
        pass


def run_iteration(objective: Objective, images: torch.Tensor, opt, extra_opt, it: int,
                  steps: Optional[int] = None) -> dict:
    """One iteration: ``steps`` (default all) image updates; returns the mean loss and extra metrics."""
    objective.begin_iteration(it)
    metrics: dict = {}
    total = 0.0
    n = objective.steps_per_iteration() if steps is None else steps
    for s in range(n):
        loss, extra_metrics = objective.loss(images, it, s)
        opt.zero_grad(set_to_none=True)
        if extra_opt is not None:
            extra_opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if extra_opt is not None:
            extra_opt.step()
        objective.after_step(images.detach(), it, s)
        total += float(loss.detach())
        metrics.update(extra_metrics)
    metrics["loss"] = total / n
    return metrics


def distill_pixels(objective: Objective, data: ImageDataset, init_pool: ImageDataset, ipc: int, ctx: RunContext, *,
                   name: str, iterations: int, lr_img: float, momentum: float, init: str, log_every: int,
                   options: dict):
    """Optimise synthetic images under ``objective`` with SGD; shared by every pixel distiller."""
    from .synthetic import class_major_labels, initial_images, iterate
    from .types import DistillResult

    device = ctx.device
    images = initial_images(init_pool, ipc, init, ctx.generator(name, "init"), device).requires_grad_(True)
    labels = class_major_labels(data.num_classes, ipc)
    objective.setup(data, ipc, labels, ctx)
    opt = torch.optim.SGD([images], lr=lr_img, momentum=momentum)
    extra = objective.extra_parameters()
    extra_opt = torch.optim.SGD(extra, lr=1.0) if extra else None

    def step(it: int) -> dict:
        metrics = run_iteration(objective, images, opt, extra_opt, it)
        lr = objective.learned_lr()
        if lr is not None:
            metrics["syn_lr"] = lr
        return metrics

    def get_state():
        return {"images": images.detach().cpu().clone(), "opt": opt.state_dict(),
                "extra_opt": extra_opt.state_dict() if extra_opt is not None else None,
                "objective": objective.state()}

    def set_state(state):
        with torch.no_grad():
            images.copy_(state["images"].to(device))
        opt.load_state_dict(state["opt"])
        if extra_opt is not None and state.get("extra_opt") is not None:
            extra_opt.load_state_dict(state["extra_opt"])
        objective.load_state(state.get("objective", {}))

    history = iterate(ctx, iterations, step, get_state, set_state, desc=name, log_every=log_every,
                      watch=("loss", "syn_lr"), positive=("syn_lr",))
    learned = objective.learned_labels()
    return DistillResult(images=images.detach().cpu(), labels=learned if learned is not None else labels, ipc=ipc, distiller=name, options=options,
                         lr=objective.learned_lr(), history=history, source=data.fingerprint())
