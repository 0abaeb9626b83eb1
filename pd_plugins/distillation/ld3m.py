"""``ld3m``: Latent Dataset Distillation with Diffusion Models (Moser et al., 2024).

The prior is a frozen class-conditional latent diffusion model (generator ``ldm``). The
synthetic set is, per image, the initial latent x_T (the autoencoder encoding of a random
real image of its class from the pruned pool) and the class-conditioning vector (the class
embedding). Images come from LD3M's modified DDIM sampler; a pixel objective (dc/dm/mtt by
name) is applied through GLaD's chunked re-render and both latents move by SGD (momentum 0.5)
at ``lr_w``. Unlike the reference code, the forward-noise draw is fixed per iteration and
image, so the gradient re-render reproduces the render the loss saw.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from pd_plugins.distillation.generative.ldm import LatentDiffusionGenerator
from pd_plugins.distillation.generative.loop import GenerativeDistiller, LatentOptions
from pd_plugins.options import option
from pd_plugins.strategies import Distiller

#: LD3M's lr_w per objective (applies to x_T and the conditioning vector)
PAPER_LR_W = {"dc": 0.1, "dm": 1.0, "mtt": 1000.0}


class LD3M(GenerativeDistiller, Distiller):
    """Distill into the initial latents and class vectors of a latent diffusion model."""

    name = "ld3m"
    recommended_keep = 0.2  # DM's ratio for the default objective (Moser et al.)

    @dataclass(frozen=True)
    class Options(LatentDiffusionGenerator.Options, LatentOptions):
        """The shared latent options plus the ``ldm`` generator's own (weights, steps, guidance, eta, ...)."""

        iterations: int = option(10000, "outer iterations (LD3M with DM: 10000)")
        lr_w: Optional[float] = option(None, "SGD lr of x_T and the class vectors; None = LD3M's value (dc 0.1, dm 1, mtt 1000)")

        def validate(self):
            LatentOptions.validate(self)
            LatentDiffusionGenerator.Options.validate(self)

    budgets = {"quick": {"iterations": 100, "batch_real": 64}}

    def generator_name(self):
        return "ldm"

    def generator_values(self):
        return {f.name: getattr(self.options, f.name) for f in fields(LatentDiffusionGenerator.Options)}

    def latent_lrs(self):
        o = self.options
        lr = o.lr_w if o.lr_w is not None else PAPER_LR_W.get(o.objective)
        if lr is None:
            from pd_plugins.errors import OptionsError

            raise OptionsError(f"ld3m has no paper lr_w for objective {o.objective!r}; set lr_w")
        return {"img": lr, "w": lr}
