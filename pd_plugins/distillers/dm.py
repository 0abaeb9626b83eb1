"""``dm``: Distribution Matching (Zhao & Bilen, WACV 2023).

Every iteration draws a fresh, randomly initialised, frozen embedder. For each class
the mean embedding of a real batch and of the class's synthetic images, both passed
through one shared (siamese) DSA draw, are matched in squared L2; the loss is summed over
classes and one SGD step (momentum 0.5) updates the synthetic images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..options import as_dict, option
from ..strategies import Distiller
from ..synthetic import RealPool, class_major_labels, initial_images, iterate
from ..types import DistillResult


def has_batchnorm(net: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


class DM(Distiller):
    """Distribution Matching: match mean embeddings of random frozen networks."""

    name = "dm"
    recommended_keep = 0.2  # Moser et al.: DM peaks with 20% easy samples kept

    @dataclass(frozen=True)
    class Options:
        iterations: int = option(20000, "outer iterations (paper: 20000)")
        lr_img: float = option(1.0, "SGD learning rate of the synthetic images (paper: 1 for ipc<=50, 10 above)")
        momentum: float = option(0.5, "SGD momentum of the synthetic images")
        batch_real: int = option(256, "real images per class per iteration")
        init: Literal["real", "noise"] = option("real", "initialise from real samples of the pruned pool, or N(0,1) noise")
        augment: bool = option(True, "siamese DSA on real and synthetic batches")
        runtime_prune: float = option(0.0, "drop this fraction of highest-loss samples from every real batch (Xu et al.)")
        log_every: int = option(10, "log the loss every N iterations")

        def validate(self):
            if self.iterations < 1:
                raise ValueError("iterations must be >= 1")
            if self.batch_real < 1:
                raise ValueError("batch_real must be >= 1")
            if not 0.0 <= self.runtime_prune < 1.0:
                raise ValueError("runtime_prune must be in [0, 1)")

    budgets = {"quick": {"iterations": 300, "lr_img": 1.0}}

    def distill(self, data, ipc, ctx, init_pool=None):
        opts = self.options
        init_pool = init_pool if init_pool is not None else data
        device = ctx.device
        pool = RealPool(data, device)
        k = data.num_classes
        images = initial_images(init_pool, ipc, opts.init, ctx.generator("dm-init"), device).requires_grad_(True)
        labels = class_major_labels(k, ipc)
        opt = torch.optim.SGD([images], lr=opts.lr_img, momentum=opts.momentum)
        aug = ctx.make_augmenter(data) if opts.augment else None
        filt = None
        if opts.runtime_prune > 0:
            from ..runtime_prune import RuntimePrune

            filt = RuntimePrune(opts.runtime_prune)

        def step(it: int) -> dict:
            g = ctx.generator("dm-iter", it)
            with ctx.fork_rng("dm-net", it):
                net = ctx.make_model(data.channels, k, data.im_size)
            net.train()
            for p in net.parameters():
                p.requires_grad_(False)
            loss = images.new_zeros(())
            for c in range(k):
                real = pool.sample(c, opts.batch_real, g)
                syn = images[c * ipc:(c + 1) * ipc]
                if aug is not None:
                    real, syn = aug.pair(real, syn, g)
                with torch.no_grad(), ctx.autocast():
                    if filt is not None:
                        real = filt(net, real, c)
                    emb_real = net.embed(real).float().mean(0)
                with ctx.autocast():
                    emb_syn = net.embed(syn).float().mean(0)
                loss = loss + ((emb_real - emb_syn) ** 2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"loss": loss.detach() / k}

        def get_state():
            return {"images": images.detach().cpu().clone(), "opt": opt.state_dict()}

        def set_state(state):
            with torch.no_grad():
                images.copy_(state["images"].to(device))
            opt.load_state_dict(state["opt"])

        history = iterate(ctx, opts.iterations, step, get_state, set_state, desc="dm", log_every=opts.log_every)
        return DistillResult(
            images=images.detach().cpu(),
            labels=labels,
            ipc=ipc,
            distiller=self.name,
            options=as_dict(opts),
            history=history,
            source=data.fingerprint(),
        )
