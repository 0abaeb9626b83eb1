"""The latent distillation loop shared by ``glad`` and ``ld3m``.

Each update renders the synthetic images from the latents in chunks under ``no_grad``,
treats them as a leaf, asks the pixel objective (DC/DM/MTT, reused by name) for dL/dx, then
re-renders chunk by chunk with grad and backpropagates dL/dx into the latents (GLaD's
memory trick: the generator graph never holds more than ``sg_batch`` images). Per-image
random render inputs (diffusion noise) are drawn once per iteration and reused by the
re-render, so the gradient belongs to the very render the loss saw.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from pd_plugins.pipeline.context import RunContext
from pd_plugins.distillation.objectives import Objective, SyntheticOptimiser
from pd_plugins.options import option
from pd_plugins.types import ImageDataset
from pd_plugins.distillation.generative.base import Generator

Render = Callable[[dict, torch.Tensor, dict], torch.Tensor]


def _chunk(d: dict, sl: slice) -> dict:
    return {k: v[sl] for k, v in d.items()}


def render(decode: Render, latents: dict, labels: torch.Tensor, aux: dict, sg_batch: int) -> torch.Tensor:
    """All images, rendered ``sg_batch`` at a time, without a graph."""
    n = labels.shape[0]
    with torch.no_grad():
        return torch.cat([decode(_chunk(latents, slice(i, i + sg_batch)), labels[i:i + sg_batch],
                                 _chunk(aux, slice(i, i + sg_batch))) for i in range(0, n, sg_batch)])


def backprop_chunked(decode: Render, latents: dict, labels: torch.Tensor, aux: dict, grad_images: torch.Tensor,
                     sg_batch: int) -> None:
    """Re-render each chunk with grad and accumulate ``grad_images`` into the latents' ``.grad``."""
    n = labels.shape[0]
    for i in range(0, n, sg_batch):
        sl = slice(i, i + sg_batch)
        out = decode(_chunk(latents, sl), labels[sl], _chunk(aux, sl))
        out.backward(grad_images[sl])


def chunked_step(decode: Render, latents: dict, labels: torch.Tensor, aux: dict, sg_batch: int,
                 loss_fn: Callable[[torch.Tensor], tuple[torch.Tensor, dict]]):
    """Render, get dL/dx from ``loss_fn`` on the leaf images, backprop into the latents.

    Returns (loss, metrics, rendered images). Extra objective parameters (MTT's lr) get
    their gradients from the same ``loss.backward()``.
    """
    images = render(decode, latents, labels, aux, sg_batch).requires_grad_(True)
    loss, metrics = loss_fn(images)
    loss.backward()
    backprop_chunked(decode, latents, labels, aux, images.grad, sg_batch)
    return loss, metrics, images.detach()


def distill_latents(objective: Objective, gen: Generator, data: ImageDataset, init_pool: ImageDataset, ipc: int,
                    ctx: RunContext, *, name: str, iterations: int, lrs: dict[str, float], momentum: float,
                    sg_batch: int, log_every: int, options: dict):
    """Optimise the generator's latents under ``objective``; returns a DistillResult with
    the latents, the generator's identity and the final rendered images."""
    from pd_plugins.distillation.synthetic import class_major_labels
    from pd_plugins.types import DistillResult

    latents = {k: v.to(ctx.device).requires_grad_(True) for k, v in gen.init_latents(init_pool, ipc, ctx).items()}
    labels = class_major_labels(data.num_classes, ipc)
    dev_labels = labels.to(ctx.device)
    objective.setup(data, ipc, labels, ctx)
    groups = [{"params": [t], "lr": lrs[gen.latent_roles.get(k, "img")], "name": k} for k, t in latents.items()]
    optimiser = SyntheticOptimiser(objective, latents, groups, momentum)
    needs_after = type(objective).after_step is not Objective.after_step
    n = labels.numel()

    def step(it: int) -> dict:
        objective.begin_iteration(it)
        aux = gen.aux(("iter", it), n, ctx)
        metrics: dict = {}
        total = 0.0
        for s in range(objective.steps_per_iteration()):
            optimiser.zero_grad()
            loss, extra_metrics, _ = chunked_step(gen.decode, latents, dev_labels, aux, sg_batch,
                                                  lambda x: objective.loss(x, it, s))
            optimiser.step()
            if needs_after:
                objective.after_step(render(gen.decode, latents, dev_labels, aux, sg_batch), it, s)
            total += float(loss.detach())
            metrics.update(extra_metrics)
        metrics["loss"] = total / objective.steps_per_iteration()
        return metrics

    history = optimiser.run(ctx, iterations, step, desc=name, log_every=log_every)
    final_key = ("final",)
    images = render(gen.decode, latents, dev_labels, gen.aux(final_key, n, ctx), sg_batch)
    generator = {**gen.describe(), "render_key": list(final_key), "stage": ctx.stage, "seed": ctx.seed}
    learned = objective.learned_labels()  # e.g. MTT soft labels
    return DistillResult(images=images.detach().cpu(), labels=learned if learned is not None else labels, ipc=ipc, distiller=name, options=options,
                         lr=objective.learned_lr(), latents={k: v.detach().cpu() for k, v in latents.items()},
                         generator=generator, history=history, source=data.fingerprint())


def pixel_objective(name: str, values: Optional[dict] = None) -> Objective:
    """The pixel distiller ``name``'s objective, built through the distiller registry.

    ``values`` are offered to that distiller's options; keys it does not have are skipped.
    """
    import dataclasses

    from pd_plugins.plugins import registries

    cls = registries()["distiller"].load(name)
    if not hasattr(cls, "objective"):
        from pd_plugins.errors import OptionsError

        raise OptionsError(f"distiller {name!r} exposes no objective(); use one of the pixel distillers (dc, dm, mtt)")
    fields = {f.name for f in dataclasses.fields(cls.Options)}
    opts = cls.resolve_options({k: v for k, v in (values or {}).items() if k in fields and v is not None})
    return cls(opts).objective()


@dataclass(frozen=True)
class LatentOptions:
    """Options every generative-prior distiller shares (subclasses add theirs)."""

    objective: str = option("dm", "pixel objective reused by name: dc, dm or mtt")
    momentum: float = option(0.5, "SGD momentum of the latents")
    sg_batch: int = option(10, "images rendered with grad at once (chunked re-render)")
    batch_real: int = option(256, "real images per class per iteration (passed to the objective)")
    augment: bool = option(True, "DSA in the objective")
    log_every: int = option(10, "log the loss every N iterations")

    def validate(self):
        if self.iterations < 1 or self.sg_batch < 1 or self.batch_real < 1:
            raise ValueError("iterations, sg_batch and batch_real must be >= 1")


class GenerativeDistiller:
    """Mixin for distillers whose synthetic set is a generator's latents.

    Subclasses define ``generator_name()``, ``generator_values()`` and ``latent_lrs()``; their
    ``Options`` extend :class:`LatentOptions` with ``iterations`` and the generator's options.
    """

    def generator_name(self) -> str:
        raise NotImplementedError

    def generator_values(self) -> dict:
        raise NotImplementedError

    def latent_lrs(self) -> dict[str, float]:
        raise NotImplementedError

    def objective(self) -> Objective:
        o = self.options
        return pixel_objective(o.objective, {"batch_real": o.batch_real, "augment": o.augment})

    def check_inputs(self) -> None:
        """The generator's prior, checked before the run directory is created."""
        from pd_plugins.distillation.generative.base import generator_options

        cls, opts = generator_options(self.generator_name(), self.generator_values())
        cls.check_weights(opts)

    def distill(self, data, ipc, ctx, init_pool=None):
        from pd_plugins.options import as_dict
        from pd_plugins.distillation.generative.base import make_generator

        o = self.options
        gen = make_generator(self.generator_name(), self.generator_values(), data, ctx)
        return distill_latents(self.objective(), gen, data, init_pool if init_pool is not None else data, ipc, ctx,
                               name=self.name, iterations=o.iterations, lrs=self.latent_lrs(), momentum=o.momentum,
                               sg_batch=o.sg_batch, log_every=o.log_every, options=as_dict(o))
