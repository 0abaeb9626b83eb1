"""``decoder``: a small class-conditional convolutional VAE decoder as the GLaD prior.

Stages: ``stem`` (linear from [z, onehot(y)] to a width x H/4 x W/4 map) and two
upsampling conv blocks, then a conv head with a sigmoid to [0, 1] pixels. ``layer`` is how
many stages the latent skips: 0 = the code z (the label conditions the stem), 1 = the stem's
feature map, 2 = the first block's feature map (GLaD's intermediate "F space").

Without ``weights`` the network is randomly initialised from the run seed (the "random
init" generator of Moser et al., Table 3); ``weights=DIR`` loads a prior saved by
``pd-run prior train --kind decoder``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pd_plugins.errors import DataError
from pd_plugins.options import option
from pd_plugins.distillation.generative.base import Generator, class_real_images, freeze
from pd_plugins.distillation.generative.store import load_prior, read_prior_meta, save_prior


class ConvVAE(nn.Module):
    """Encoder q(z|x) and class-conditional decoder p(x|z, y) for C x H x W images in [0, 1]."""

    def __init__(self, channels: int, im_size, num_classes: int, z_dim: int = 32, width: int = 64):
        super().__init__()
        h, w = int(im_size[0]), int(im_size[1])
        self.config = {"channels": channels, "im_size": [h, w], "num_classes": num_classes, "z_dim": z_dim, "width": width}
        self.h0, self.w0 = math.ceil(h / 4), math.ceil(w / 4)
        self.im_size = (h, w)
        self.num_classes = num_classes
        self.width = width
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, width // 2, 3, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, width, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
            nn.Linear(width * self.h0 * self.w0, 2 * z_dim),
        )
        self.stem = nn.Linear(z_dim + num_classes, width * self.h0 * self.w0)
        self.blocks = nn.ModuleList([self._up(width, width), self._up(width, width // 2)])
        self.head = nn.Conv2d(width // 2, channels, 3, 1, 1)

    @staticmethod
    def _up(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1),
                             nn.GroupNorm(min(8, cout), cout), nn.LeakyReLU(0.2))

    def encode(self, unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z | x) for [0, 1] images."""
        mu, logvar = self.encoder(unit * 2 - 1).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def to_layer(self, z: torch.Tensor, labels: torch.Tensor, layer: int) -> torch.Tensor:
        """Run the first ``layer`` stages: the latent at that layer."""
        if layer == 0:
            return z
        f = F.leaky_relu(self.stem(torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], 1)), 0.2)
        f = f.view(-1, self.width, self.h0, self.w0)
        for block in self.blocks[: layer - 1]:
            f = block(f)
        return f

    def from_layer(self, latent: torch.Tensor, labels: torch.Tensor, layer: int) -> torch.Tensor:
        """Run the remaining stages: [0, 1] images at the prior's size."""
        f = self.to_layer(latent, labels, 1) if layer == 0 else latent
        for block in self.blocks[max(layer - 1, 0):]:
            f = block(f)
        x = torch.sigmoid(self.head(f))
        return x[..., : self.im_size[0], : self.im_size[1]]

    def forward(self, unit: torch.Tensor, labels: torch.Tensor):
        mu, logvar = self.encode(unit)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.from_layer(z, labels, 0), mu, logvar


MAX_LAYER = 2


class DecoderGenerator(Generator):
    """Frozen class-conditional conv decoder (random init or a trained built-in VAE)."""

    name = "decoder"
    latent_roles = {"z": "w", "f": "img"}

    @dataclass(frozen=True)
    class Options:
        weights: str = option("", "directory of a prior saved by `pd-run prior train --kind decoder`; empty = random init from the run seed")
        layer: int = option(1, "decoder stages skipped by the latent: 0 = code z, 1 = stem feature map, 2 = first block's map")
        init: Literal["random", "encode"] = option("random", "latent init: z ~ N(0, I) (GLaD), or the encoding of a random real image of the class from the pruned pool")
        z_dim: int = option(32, "code size of a randomly initialised decoder")
        width: int = option(64, "channel width of a randomly initialised decoder")

        def validate(self):
            if not 0 <= self.layer <= MAX_LAYER:
                raise ValueError(f"layer must be in 0..{MAX_LAYER}")

    @classmethod
    def check_weights(cls, options) -> None:
        if options.weights:
            read_prior_meta(Path(options.weights), "decoder")
        elif options.init == "encode":
            raise DataError("generator 'decoder': init=encode needs trained weights (weights=DIR); use init=random")

    @classmethod
    def check_geometry(cls, options, data) -> None:
        if options.weights:
            from pd_plugins.distillation.generative.base import check_trained_for

            config = read_prior_meta(Path(options.weights), "decoder").get("config", {})
            check_trained_for(config, {"channels": data.channels, "im_size": list(data.im_size),
                                       "num_classes": data.num_classes}, options.weights)

    def __init__(self, options, data, ctx):
        super().__init__(options, data, ctx)
        o = self.options
        self.check_weights(o)
        if o.weights:
            net, _ = load_prior(Path(o.weights), "decoder", ConvVAE)
            self.check_data(net.config, o.weights)
            self.trained = True
        else:
            with ctx.fork_rng("decoder-init"):
                net = ConvVAE(data.channels, data.im_size, data.num_classes, o.z_dim, o.width)
            self.trained = False
        self.net = freeze(net.to(ctx.device))

    def modules(self):
        return [self.net]

    def latent_shapes(self):
        n = self.net
        if self.options.layer == 0:
            return {"z": (n.config["z_dim"],)}
        if self.options.layer == 1:
            return {"f": (n.width, n.h0, n.w0)}
        return {"f": (n.width, 2 * n.h0, 2 * n.w0)}

    def init_latents(self, init_pool, ipc, ctx):
        from pd_plugins.distillation.synthetic import class_major_labels

        labels = class_major_labels(self.num_classes, ipc, self.device)
        if self.options.init == "encode":
            real = class_real_images(init_pool, ipc, ctx.generator("decoder", "init")).to(self.device)
            with torch.no_grad():
                z, _ = self.net.encode(self.unit_pixels(real))
        else:
            g = ctx.generator("decoder", "init")
            z = torch.randn(labels.numel(), self.net.config["z_dim"], generator=g).to(self.device)
        with torch.no_grad():
            lat = self.net.to_layer(z, labels, self.options.layer)
        key = "z" if self.options.layer == 0 else "f"
        return {key: lat.detach().clone()}

    def decode(self, latents, labels, aux):
        lat = latents["z"] if self.options.layer == 0 else latents["f"]
        return self.normalise_unit(self.net.from_layer(lat, labels, self.options.layer))


def train_decoder(data, ctx, out: Path, *, epochs: int = 60, z_dim: int = 32, width: int = 64, lr: float = 2e-3,
                  batch: int = 128, beta: float = 0.5) -> dict:
    """Fit a small class-conditional VAE on ``data`` and save it to ``out``; returns metrics."""
    with ctx.fork_rng("prior-decoder-init"):
        net = ConvVAE(data.channels, data.im_size, data.num_classes, z_dim, width).to(ctx.device)
    unit, labels = _unit_set(data, ctx.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss = torch.zeros(())
    for ep in ctx.progress(range(epochs), total=epochs, desc="prior decoder"):
        g = ctx.generator("prior-decoder", ep)
        perm = torch.randperm(len(labels), generator=g).to(ctx.device, non_blocking=True)
        with ctx.fork_rng("prior-decoder-noise", ep):
            for i in range(0, len(perm), batch):
                idx = perm[i:i + batch]
                rec, mu, logvar = net(unit[idx], labels[idx])
                recon = F.binary_cross_entropy(rec, unit[idx], reduction="sum") / len(idx)
                kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum() / len(idx)
                loss = recon + beta * kl
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        if ep % 20 == 0 or ep == epochs - 1:
            ctx.log(ep, loss=float(loss.detach()))
    save_prior(out, "decoder", net.config, {"vae": net})
    return {"kind": "decoder", "final_loss": float(loss), "epochs": epochs}


def _unit_set(data, device):
    """All images of ``data`` as [0, 1] pixels and hard labels on ``device``."""
    x = data.images(device=device)
    mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
    return (x * std + mean).clamp(0, 1), data.hard_labels.to(device)
