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

from dataclasses import dataclass
from typing import Optional

from ..generative.loop import GenerativeDistiller, LatentOptions
from ..options import option
from ..strategies import Distiller

#: LD3M's lr_w per objective (applies to x_T and the conditioning vector)
PAPER_LR_W = {"dc": 0.1, "dm": 1.0, "mtt": 1000.0}


class LD3M(GenerativeDistiller, Distiller):
    """Distill into the initial latents and class vectors of a latent diffusion model."""

    name = "ld3m"
    recommended_keep = 0.2  # DM's ratio for the default objective (Moser et al.)

    @dataclass(frozen=True)
    class Options(LatentOptions):
        weights: str = option("", "LDM prior directory (`pd-run prior train --kind ldm`, or a diffusers unet/+vae/ folder); required")
        steps: int = option(10, "DDIM steps (LD3M: 10)")
        guidance: float = option(3.0, "classifier-free guidance scale (LD3M: 3.0)")
        eta: float = option(0.0, "DDIM eta (LD3M: 0)")
        grad_checkpoint: bool = option(True, "gradient-checkpoint every UNet call")
        iterations: int = option(10000, "outer iterations (LD3M with DM: 10000)")
        lr_w: Optional[float] = option(None, "SGD lr of x_T and the class vectors; None = LD3M's value (dc 0.1, dm 1, mtt 1000)")

        def validate(self):
            LatentOptions.validate(self)
            if self.steps < 1:
                raise ValueError("steps must be >= 1")

    budgets = {"quick": {"iterations": 100, "batch_real": 64}}

    def generator_name(self):
        return "ldm"

    def generator_values(self):
        o = self.options
        return {"weights": o.weights, "steps": o.steps, "guidance": o.guidance, "eta": o.eta,
                "grad_checkpoint": o.grad_checkpoint}

    def latent_lrs(self):
        o = self.options
        lr = o.lr_w if o.lr_w is not None else PAPER_LR_W.get(o.objective)
        if lr is None:
            from ..errors import OptionsError

            raise OptionsError(f"ld3m has no paper lr_w for objective {o.objective!r}; set lr_w")
        return {"img": lr, "w": lr}
