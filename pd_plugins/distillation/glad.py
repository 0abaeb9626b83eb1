"""``glad``: Generative Latent Distillation (Cazenavette et al., CVPR 2023).

The synthetic set is one latent per image for a frozen generator (at an intermediate layer
where the generator has one). Every iteration decodes the latents, applies a pixel objective
(``dc``, ``dm`` or ``mtt``, reused by name from the distiller registry) and updates the
latents with SGD (momentum 0.5) through GLaD's chunked re-render.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from pd_plugins.distillation.generative.loop import GenerativeDistiller, LatentOptions
from pd_plugins.options import option
from pd_plugins.strategies import Distiller

#: GLaD's per-objective learning rates: lr_img (feature map F) and lr_w (codes)
PAPER_LRS = {"dc": {"img": 1.0, "w": 1e-3}, "dm": {"img": 10.0, "w": 0.01}, "mtt": {"img": 1e4, "w": 10.0}}

#: GLaD's objective settings (GeorgeCazenavette/glad): DSA on for every objective; DC with one
#: outer and one inner loop at every ipc; MTT with TESLA's constant-memory gradient, lr_lr 1e-6,
#: N = 20 student steps over M = 3 expert epochs from start epochs 0..4 of 100 experts x 15 epochs
OBJECTIVE_DEFAULTS = {
    "dc": {"augment": True, "outer_loop": 1, "inner_loop": 1},
    "dm": {"augment": True},
    "mtt": {"augment": True, "memory": "constant", "lr_lr": 1e-6, "lr_teacher": 0.01, "syn_steps": 20,
            "expert_epochs": 3, "max_start_epoch": 5, "experts": 100, "train_epochs": 15},
}

#: the ``quick`` budget's objective settings (digits, CPU minutes), shared with ld3m
QUICK_OBJECTIVE = {
    "dc": {"batch_real": 64},
    "dm": {"batch_real": 64},
    "mtt": {"experts": 4, "syn_steps": 10, "expert_epochs": 2, "max_start_epoch": 2, "train_epochs": 4},
}


class GLaD(GenerativeDistiller, Distiller):
    """Distill into the latent space of a frozen generative prior."""

    name = "glad"
    recommended_keep = 0.2  # DM's ratio for the default objective; recommended_keep_for follows the objective
    objective_defaults = OBJECTIVE_DEFAULTS
    objective_budgets = {"quick": QUICK_OBJECTIVE}

    @classmethod
    def uses_real_init(cls, options) -> bool:
        return False  # latents start from N(0, I) or from encoded real images, not from pixels

    @dataclass(frozen=True)
    class Options(LatentOptions):
        generator: str = option("decoder", "generator plugin (pd-run list generators)")
        weights: str = option("", "generator weights directory; empty = the generator's random init (seeded)")
        layer: int = option(1, "latent layer: decoder stages skipped (GLaD's intermediate F space)")
        init: Literal["random", "encode"] = option("random", "latent init: z ~ N(0, I) (GLaD) or encode real images of the pruned pool")
        iterations: int = option(1000, "outer iterations (GLaD: 1000)")
        lr_img: Optional[float] = option(None, "SGD lr of feature-map latents; None = GLaD's value for the objective (dc 1, dm 10, mtt 1e4)")
        lr_w: Optional[float] = option(None, "SGD lr of code latents; None = GLaD's value (dc 1e-3, dm 0.01, mtt 10)")

    budgets = {"quick": {"iterations": 200}}

    def generator_name(self):
        return self.options.generator

    def generator_values(self):
        o = self.options
        return {"weights": o.weights, "layer": o.layer, "init": o.init}

    def latent_lrs(self):
        o = self.options
        paper = PAPER_LRS.get(o.objective)
        if paper is None and (o.lr_img is None or o.lr_w is None):
            from pd_plugins.errors import OptionsError

            raise OptionsError(f"glad has no paper learning rates for objective {o.objective!r}; set lr_img and lr_w")
        paper = paper or {}
        return {"img": paper["img"] if o.lr_img is None else o.lr_img, "w": paper["w"] if o.lr_w is None else o.lr_w}
