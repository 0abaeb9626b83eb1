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
from pd_plugins.distillation.glad import QUICK_OBJECTIVE
from pd_plugins.errors import OptionsError
from pd_plugins.options import option
from pd_plugins.strategies import Distiller

#: LD3M's lr_w per objective (applies to x_T and the conditioning vector)
PAPER_LR_W = {"dc": 0.1, "dm": 1.0, "mtt": 1000.0}

#: LD3M's objective settings (Brian-Moser/prune_and_distill): DSA on; DC with outer/inner loop 1/1;
#: MTT with the constant-memory gradient, lr_lr 1e-6, N = 10 student steps over M = 2 expert epochs
#: from start epochs 0..1; the experts are GLaD's buffers (100 x 15 epochs), which the repository reuses
OBJECTIVE_DEFAULTS = {
    "dc": {"augment": True, "outer_loop": 1, "inner_loop": 1},
    "dm": {"augment": True},
    "mtt": {"augment": True, "memory": "constant", "lr_lr": 1e-6, "lr_teacher": 0.01, "syn_steps": 10,
            "expert_epochs": 2, "max_start_epoch": 2, "experts": 100, "train_epochs": 15},
}


class LD3M(GenerativeDistiller, Distiller):
    """Distill into the initial latents and class vectors of a latent diffusion model."""

    name = "ld3m"
    recommended_keep = 0.2  # DM's ratio for the default objective; recommended_keep_for follows the objective
    objective_defaults = OBJECTIVE_DEFAULTS
    objective_budgets = {"quick": QUICK_OBJECTIVE}

    @dataclass(frozen=True)
    class Options(LatentDiffusionGenerator.Options, LatentOptions):
        """The shared latent options plus the ``ldm`` generator's own (weights, steps, guidance, eta, ...)."""

        weights: str = option("auto", "prior directory (unet/, vae/, optional scheduler/ and class_embedder.pt), or "
                                      "auto: train the small prior of `pd-run prior train --kind ldm` on the pool "
                                      "once and cache it")
        iterations: int = option(10000, "outer iterations (LD3M with DM: 10000)")
        lr_w: Optional[float] = option(None, "SGD lr of x_T and the class vectors; None = LD3M's value (dc 0.1, dm 1, mtt 1000)")
        prior_ae_epochs: int = option(30, "weights=auto: autoencoder epochs of the small prior")
        prior_unet_epochs: int = option(60, "weights=auto: UNet epochs of the small prior")
        prior_width: int = option(64, "weights=auto: UNet base width of the small prior (autoencoder: half)")

        def validate(self):
            LatentOptions.validate(self)
            LatentDiffusionGenerator.Options.validate(self)
            if min(self.prior_ae_epochs, self.prior_unet_epochs) < 1 or self.prior_width < 2 or self.prior_width % 2:
                raise ValueError("prior_ae_epochs and prior_unet_epochs must be >= 1, prior_width even and >= 2")
            if self.weights == "auto" and self.class_ids:
                raise ValueError("class_ids maps an outside prior's classes; weights=auto trains one on the "
                                 "dataset's own classes")

    budgets = {"quick": {"iterations": 100, "prior_ae_epochs": 10, "prior_unet_epochs": 20, "prior_width": 32}}

    @classmethod
    def resolve_options(cls, values=None, budget=None):
        opts = super().resolve_options(values, budget)
        given = [k for k in (values or {}) if str(k).replace("-", "_").startswith("prior_")]
        if given and opts.weights != "auto":
            raise OptionsError(f"ld3m {given[0]}: only weights=auto trains a prior; weights={opts.weights} is used as it is")
        return opts

    def generator_name(self):
        return "ldm"

    def generator_values(self):
        return {f.name: getattr(self.options, f.name) for f in fields(LatentDiffusionGenerator.Options)}

    def prior_settings(self) -> dict:
        """``train_ldm`` settings of the weights=auto prior (part of its cache key)."""
        o = self.options
        return {"ae_epochs": o.prior_ae_epochs, "unet_epochs": o.prior_unet_epochs, "width": o.prior_width}

    def check_inputs(self) -> None:
        if self.options.weights != "auto":
            return super().check_inputs()
        from pd_plugins.distillation.generative.ldm import require_diffusers

        require_diffusers()

    def check_data(self, data) -> None:
        if self.options.weights != "auto":
            return super().check_data(data)
        h, w = data.im_size
        if h != w or h % 2:
            from pd_plugins.errors import DataError

            raise DataError(f"ld3m weights=auto trains a prior for square images with an even side, got {h}x{w}; "
                            "give weights=DIR")

    def distill(self, data, ipc, ctx, init_pool=None):
        if self.options.weights != "auto":
            return super().distill(data, ipc, ctx, init_pool)
        from dataclasses import replace

        from pd_plugins.distillation.generative.auto_prior import ensure_auto_prior

        path, trained = ensure_auto_prior(data, ctx, self.prior_settings(), who=self.name)
        result = type(self)(replace(self.options, weights=str(path))).distill(data, ipc, ctx, init_pool)
        result.options = {**result.options, "weights": "auto"}
        result.meta = {**result.meta, "prior": {"weights": "auto", "path": str(path), "trained_now": trained,
                                                "settings": self.prior_settings()}}
        return result

    def latent_lrs(self):
        o = self.options
        lr = o.lr_w if o.lr_w is not None else PAPER_LR_W.get(o.objective)
        if lr is None:
            from pd_plugins.errors import OptionsError

            raise OptionsError(f"ld3m has no paper lr_w for objective {o.objective!r}; set lr_w")
        return {"img": lr, "w": lr}
