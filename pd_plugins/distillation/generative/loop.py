"""The latent distillation loop shared by ``glad`` and ``ld3m``.

Each update renders the synthetic images from the latents in chunks under ``no_grad``,
treats them as a leaf, asks the pixel objective (DC/DM/MTT, reused by name) for dL/dx, then
re-renders chunk by chunk with grad and backpropagates dL/dx into the latents (GLaD's
memory trick: the generator graph never holds more than ``sg_batch`` images). Per-image
random render inputs (diffusion noise) are drawn once per iteration and reused by the
re-render, so the gradient belongs to the very render the loss saw.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, ClassVar, Optional

import torch

from pd_plugins.errors import OptionsError
from pd_plugins.distillation.generative.objective import resolve_objective_options
from pd_plugins.pipeline.context import RunContext
from pd_plugins.distillation.objectives import Objective, SyntheticOptimiser
from pd_plugins.options import option
from pd_plugins.strategies import budget_chain
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
    # render again after an update only for an objective that reads the updated images (DC trains its
    # network on them); constraints such as MTT's soft-label simplex are projections inside optimiser.step()
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
            total = total + loss.detach().double()  # summed on the device, read once an iteration
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
                         generator=generator, history=history, source=data.fingerprint(), meta=objective.describe())


def pixel_objective(name: str, values: Optional[dict] = None) -> Objective:
    """The pixel distiller ``name``'s objective with option ``values`` (resolved through its own
    parser: an unknown key is an error)."""
    from pd_plugins.distillation.generative.objective import build_objective, resolve_objective_options

    return build_objective(name, resolve_objective_options(name, name, values))


#: top-level keys that were latent options once and are objective options now
MOVED_TO_OBJECTIVE = ("batch_real", "augment")


@dataclass(frozen=True)
class LatentOptions:
    """Options every generative-prior distiller shares (subclasses add theirs)."""

    objective: str = option("dm", "pixel objective reused by name: dc, dm or mtt")
    objective_options: dict = option({}, "the objective's options (-D objective_options.KEY=VALUE or a JSON object): "
                                         "its paper defaults < this method's per-objective defaults < budget < these")
    momentum: float = option(0.5, "SGD momentum of the latents")
    sg_batch: int = option(10, "images rendered with grad at once (chunked re-render)")
    log_every: int = option(10, "log the loss every N iterations")

    def validate(self):
        if self.iterations < 1 or self.sg_batch < 1:
            raise ValueError("iterations and sg_batch must be >= 1")


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

    def memory_flags(self) -> list[str]:
        """``sg_batch`` (images rendered with a graph at once), the objective's own knobs, then ``--ipc``."""
        from pd_plugins.distillation.generative.objective import objective_class

        inner = objective_class(self.options.objective).memory_options
        return ["-D sg_batch"] + [f"-D objective_options.{name}" for name in inner] + ["--ipc"]

    #: per objective: the method's published objective settings (over the objective's own defaults)
    objective_defaults: ClassVar[dict[str, dict]] = {}
    #: per budget, per objective: scaled-down objective settings (over ``objective_defaults``)
    objective_budgets: ClassVar[dict[str, dict[str, dict]]] = {}
    #: Moser et al.'s best keep ratio per objective (easy samples kept)
    keep_by_objective: ClassVar[dict[str, float]] = {"dc": 0.6, "mtt": 0.6, "dm": 0.2}

    @classmethod
    def resolve_options(cls, values=None, budget=None):
        """The distiller's options with ``objective_options`` resolved in full (layered, checked)."""
        moved = [k for k in (values or {}) if str(k).replace("-", "_") in MOVED_TO_OBJECTIVE]
        if moved:
            key = str(moved[0]).replace("-", "_")
            raise OptionsError(f"{key!r} is an objective option of {cls.name}: pass -D objective_options.{key}=VALUE")
        opts = super().resolve_options(values, budget)
        layer: dict = {}
        for name in budget_chain(budget):  # cpu: quick's objective settings, then cpu's
            layer.update(cls.objective_budgets.get(name, {}).get(opts.objective, {}))
        resolved = resolve_objective_options(cls.name, opts.objective, opts.objective_options,
                                             cls.objective_defaults.get(opts.objective), layer or None)
        opts = dataclasses.replace(opts, objective_options=resolved)
        cls(opts).objective()  # options the objective cannot honour fail here, before any work
        return opts

    @classmethod
    def recommended_keep_for(cls, options) -> Optional[float]:
        """Moser et al.: 0.6 with the DC and MTT objectives, 0.2 with DM; another objective's own."""
        if options.objective in cls.keep_by_objective:
            return cls.keep_by_objective[options.objective]
        from pd_plugins.distillation.generative.objective import objective_class

        return objective_class(options.objective).recommended_keep

    def resolved_objective_options(self) -> dict:
        """The objective's options these options select (no budget layer: that is in a resolved set already)."""
        o = self.options
        return resolve_objective_options(self.name, o.objective, o.objective_options,
                                         self.objective_defaults.get(o.objective))

    def objective(self) -> Objective:
        from pd_plugins.distillation.generative.objective import build_objective

        return build_objective(self.options.objective, self.resolved_objective_options())

    def check_inputs(self) -> None:
        """The generator's prior, checked before the run directory is created."""
        from pd_plugins.distillation.generative.base import generator_options

        cls, opts = generator_options(self.generator_name(), self.generator_values())
        cls.check_weights(opts)

    def check_data(self, data) -> None:
        """The generator's prior against the dataset's geometry, before the run directory is created."""
        from pd_plugins.distillation.generative.base import generator_options

        cls, opts = generator_options(self.generator_name(), self.generator_values())
        cls.check_geometry(opts, data)

    def distill(self, data, ipc, ctx, init_pool=None):
        from pd_plugins.options import as_dict
        from pd_plugins.distillation.generative.base import make_generator

        o = self.options
        gen = make_generator(self.generator_name(), self.generator_values(), data, ctx)
        return distill_latents(self.objective(), gen, data, init_pool if init_pool is not None else data, ipc, ctx,
                               name=self.name, iterations=o.iterations, lrs=self.latent_lrs(), momentum=o.momentum,
                               sg_batch=o.sg_batch, log_every=o.log_every,
                               options={**as_dict(o), "objective_options": self.resolved_objective_options()})
