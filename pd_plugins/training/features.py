"""Batched feature extraction: a model's penultimate features (``embed``) over a whole dataset."""
from __future__ import annotations

from typing import Optional

import torch

from pd_plugins.errors import OptionsError
from pd_plugins.pipeline.context import RunContext
from pd_plugins.types import ImageDataset


@torch.inference_mode()
def embed_dataset(model: torch.nn.Module, data: ImageDataset, ctx: Optional[RunContext] = None, *,
                  batch: int = 512) -> torch.Tensor:
    """(N, d) float32 CPU features ``model.embed(x)`` of every unaugmented image of ``data``.

    The model is put in eval mode and fed ``batch`` normalised images at a time. With a ``ctx`` the
    images go to ``ctx.device`` under the run's precision (and compilation); without one, to the
    device of the model's parameters, in fp32.
    """
    from pd_plugins.training import accel

    if not callable(getattr(model, "embed", None)):
        raise OptionsError(f"model {type(model).__name__} has no embed() (penultimate features); "
                           "use a model that has one, e.g. convnet")
    if batch < 1:
        raise OptionsError(f"embedding batch must be >= 1, got {batch}")
    model.eval()
    device = ctx.device if ctx is not None else next(model.parameters()).device
    out = []
    for start in range(0, len(data), batch):
        x = data.images(slice(start, min(start + batch, len(data))), device)
        f = accel.forward(model, x, ctx, "embed") if ctx is not None else model.embed(x)
        out.append(f.float().cpu())
    return torch.cat(out)
