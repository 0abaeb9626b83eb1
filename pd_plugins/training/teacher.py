"""A teacher network whose softened predictions replace a set's labels during evaluation.

SRe2L (Yin et al., NeurIPS 2023) and RDED (Sun et al., CVPR 2024) evaluate a distilled set by
relabelling every augmented training batch with a teacher trained on the full real training
split: the student minimises ``T^2`` times the cross-entropy between ``softmax(teacher(x) / T)``
and ``softmax(student(x) / T)`` (the KL divergence up to the teacher's entropy, a constant; the
``T^2`` keeps the gradients' scale, Hinton et al. 2015). The evaluators do this with
``-E labels=teacher`` (``teacher_temperature`` T, ``teacher_epochs``).

The teacher is the evaluation model trained with SGD (lr 0.01, momentum 0.9, weight decay 5e-4,
batch 256, the run's augmentation) on the real split; its weights are cached under
``ctx.cache_dir/teachers/`` keyed by everything they depend on, so every evaluation of a run
(and of the runs beside it) shares one teacher.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from pd_plugins.errors import OptionsError
from pd_plugins.io import atomic_torch_save
from pd_plugins.training.evaluate import TrainRecipe
from pd_plugins.types import ImageDataset, sha256_json

TEACHER_RECIPE = TrainRecipe(epochs=50, lr=0.01, momentum=0.9, weight_decay=5e-4, batch=256, augment=True)


@dataclass
class Teacher:
    """A trained network and the temperature that softens its predictions into targets."""

    net: torch.nn.Module
    temperature: float

    @torch.no_grad()
    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """``softmax(teacher(x) / T)``: the soft targets of a (possibly augmented) batch."""
        self.net.eval()
        return torch.softmax(self.net(x).float() / self.temperature, dim=1)


def teacher_key(real: ImageDataset, ctx, model: str, recipe: TrainRecipe) -> dict:
    """Everything the teacher's weights depend on."""
    return {"data": real.fingerprint(), "size": len(real), "model": model,
            "model_options": ctx.model_options_for(model), "num_classes": real.num_classes,
            "recipe": {"epochs": recipe.epochs, "lr": recipe.lr, "momentum": recipe.momentum,
                       "weight_decay": recipe.weight_decay, "batch": recipe.batch, "augment": recipe.augment},
            "augmentation": {"name": ctx.augmentation, "options": ctx.augmentation_options} if recipe.augment else None,
            "precision": ctx.precision, "seed": ctx.seed}


def teacher_path(real: ImageDataset, ctx, model: str, recipe: TrainRecipe) -> Path:
    if ctx.cache_dir is None:
        raise OptionsError("labels=teacher needs a cache directory for the teacher (RunContext.cache_dir / PD_CACHE_DIR)")
    return Path(ctx.cache_dir) / "teachers" / f"{sha256_json(teacher_key(real, ctx, model, recipe))[:24]}.pt"


def load_teacher(real: ImageDataset, ctx, *, model: Optional[str], epochs: int, temperature: float) -> Teacher:
    """The teacher of ``real`` (the real training split, in the evaluated set's space): read from the cache,
    else trained (seeded from the run seed) and cached atomically."""
    model = model or ctx.model
    recipe = dataclasses.replace(TEACHER_RECIPE, epochs=int(epochs))
    path = teacher_path(real, ctx, model, recipe)
    with ctx.fork_rng("teacher-net", model):
        net = ctx.make_model(real.channels, real.num_classes, real.im_size, name=model)
    if path.exists():
        net.load_state_dict(torch.load(path, map_location=ctx.device, weights_only=True))
    else:
        recipe.train(net, real, ctx, ctx.generator("teacher-train", model), desc=f"teacher {model}")
        atomic_torch_save({k: v.detach().cpu() for k, v in net.state_dict().items()}, path)
    return Teacher(net=net.eval(), temperature=float(temperature))


def teacher_inputs(evaluator, ctx, real) -> dict:
    """The keyword arguments an evaluation passes to ``evaluator.evaluate`` for a teacher: ``{"teacher": ...}``
    (loaded or trained with the evaluator's ``teacher_epochs`` and ``teacher_temperature``) when its options
    ask for ``labels=teacher``, else none. ``real``: a callable giving the real training split in the set's
    space (called only when a teacher is needed)."""
    opts = getattr(evaluator, "options", None)
    if getattr(opts, "labels", None) != "teacher":
        return {}
    return {"teacher": load_teacher(real(), ctx, model=None, epochs=opts.teacher_epochs,
                                    temperature=opts.teacher_temperature)}
