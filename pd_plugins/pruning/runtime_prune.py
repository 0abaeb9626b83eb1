"""Runtime pruning (Xu et al., "Distill Gold from Massive Ores"): drop the highest-loss
fraction of every real batch during distillation.

Any distiller switches it on with one option (``-D runtime_prune=0.1``) and calls the
filter on each class batch after the siamese augmentation, before the real-side
gradient or embedding is computed.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class RuntimePrune:
    """Keep the ``1 - fraction`` lowest-loss samples of a real class batch under ``net``."""

    def __init__(self, fraction: float):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"runtime_prune must be in [0, 1), got {fraction}")
        self.fraction = float(fraction)

    def keep_mask(self, net: torch.nn.Module, real: torch.Tensor, label) -> torch.Tensor:
        """Boolean mask over the batch: False for the ``ceil(fraction * B)`` highest losses."""
        b = real.shape[0]
        drop = min(math.ceil(self.fraction * b), b - 1)
        mask = torch.ones(b, dtype=torch.bool, device=real.device)
        if drop <= 0:
            return mask
        with torch.no_grad():
            logits = net(real).float()
            target = torch.as_tensor(label, device=real.device).expand(b) if not torch.is_tensor(label) or label.dim() == 0 else label
            losses = F.cross_entropy(logits, target.long(), reduction="none")
        # stable order: highest loss first, ties broken by position
        order = torch.sort(-losses, stable=True).indices
        mask[order[:drop]] = False
        return mask

    def __call__(self, net: torch.nn.Module, real: torch.Tensor, label):
        return real[self.keep_mask(net, real, label)]
