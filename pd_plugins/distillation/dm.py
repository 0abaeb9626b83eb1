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

from pd_plugins.training import accel
from pd_plugins.distillation.objectives import Objective, distill_pixels
from pd_plugins.options import as_dict, option
from pd_plugins.strategies import Distiller
from pd_plugins.distillation.synthetic import RealPool


class DMObjective(Objective):
    """Sum over classes of ||mean embed(real_c) - mean embed(syn_c)||^2 under a fresh frozen net."""

    def __init__(self, batch_real: int = 256, augment: bool = True, runtime_prune: float = 0.0):
        self.batch_real = batch_real
        self.augment = augment
        self.runtime_prune = runtime_prune

    def setup(self, data, ipc, labels, ctx):
        self.ctx = ctx
        self.data = data
        self.ipc = ipc
        self.pool = RealPool(data, ctx.device)
        self.aug = ctx.make_augmenter(data) if self.augment else None
        self.filter = None
        if self.runtime_prune > 0:
            from pd_plugins.pruning.runtime_prune import RuntimePrune

            self.filter = RuntimePrune(self.runtime_prune)

    def begin_iteration(self, it):
        with self.ctx.fork_rng("dm-net", it):
            net = self.ctx.make_model(self.data.channels, self.data.num_classes, self.data.im_size)
        net.train()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net
        self.g = self.ctx.generator("dm-iter", it)

    def loss(self, images, it, step):
        ctx, ipc = self.ctx, self.ipc
        loss = images.new_zeros(())
        for c in range(self.data.num_classes):
            real = self.pool.sample(c, self.batch_real, self.g)
            syn = images[c * ipc:(c + 1) * ipc]
            if self.aug is not None:
                real, syn = self.aug.pair(real, syn, self.g)
            with torch.no_grad():
                if self.filter is not None:
                    with ctx.autocast():
                        real = self.filter(self.net, real, c)
                emb_real = accel.forward(self.net, real, ctx, "embed").float().mean(0)
            emb_syn = accel.forward(self.net, syn, ctx, "embed").float().mean(0)
            loss = loss + ((emb_real - emb_syn) ** 2).sum()
        return loss, {}


class DM(Distiller):
    """Distribution Matching: match mean embeddings of random frozen networks."""

    name = "dm"
    recommended_keep = 0.2  # Moser et al.: DM peaks with 20% easy samples kept
    memory_options = ("batch_real",)

    @classmethod
    def uses_real_init(cls, options) -> bool:
        return options.init == "real"

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

    budgets = {"quick": {"iterations": 200, "batch_real": 64}}

    def objective(self) -> DMObjective:
        o = self.options
        return DMObjective(batch_real=o.batch_real, augment=o.augment, runtime_prune=o.runtime_prune)

    def cost(self, data, ipc, ctx, init_pool=None):
        """Per class, a real batch through the frozen embedder without a graph and the class's synthetic
        images with one, held for all classes until the images' backward."""
        from pd_plugins.planning.costs import NetworkPass, StageCost, pool_on_device, synthetic_state
        from pd_plugins.planning.probes import ObjectiveProbe

        o = self.options
        shape = (data.channels, *data.im_size)
        net = ctx.make_model(data.channels, data.num_classes, data.im_size)
        aug = ctx.make_augmenter(data) if o.augment else None
        real = min(o.batch_real, max(data.class_counts()))
        passes = [NetworkPass(net, shape, real, order=0, held=0, augmenter=aug, train_params=False, role="embedder"),
                  NetworkPass(net, shape, ipc, order=1, held=data.num_classes, input_grad=True, augmenter=aug,
                              train_params=False, role="embedder")]
        probe = ObjectiveProbe(self.objective, data, ipc, ctx, lr_img=o.lr_img, momentum=o.momentum)
        return [StageCost("distill", passes=passes, resident={**synthetic_state(data, ipc), **pool_on_device(data, ctx)},
                          units=[probe.unit(f"iteration ({data.num_classes} classes, real batch {real}, ipc {ipc})",
                                            o.iterations)],
                          lower=("--ipc", "-D batch_real"))]

    def distill(self, data, ipc, ctx, init_pool=None):
        o = self.options
        return distill_pixels(self.objective(), data, init_pool if init_pool is not None else data, ipc, ctx,
                              name=self.name, iterations=o.iterations, lr_img=o.lr_img, momentum=o.momentum,
                              init=o.init, log_every=o.log_every, options=as_dict(o))
