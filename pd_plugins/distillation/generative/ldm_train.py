"""Fitting a small class-conditional latent diffusion prior on a dataset (CPU, minutes).

Stage 1: a tiny diffusers ``AutoencoderKL`` (downsampling x2) on [-1, 1] pixels. Stage 2: a
small ``UNet2DModel`` with ``num_class_embeds = K + 1`` (the last row is the null class,
used for 10% of samples so classifier-free guidance works) learns epsilon-prediction on the
scaled autoencoder latents under LD3M's schedule. Saved with ``save_pretrained``
(safetensors) into ``unet/``, ``vae/`` and ``scheduler/`` plus ``prior.json``.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from pd_plugins.io import atomic_write_json
from pd_plugins.distillation.generative.decoder import _unit_set
from pd_plugins.distillation.generative.ldm import LDM_SCHEDULE, require_diffusers


def _batches(n: int, batch: int, g: torch.Generator, device):
    perm = torch.randperm(n, generator=g).to(device, non_blocking=True)
    return [perm[i:i + batch] for i in range(0, n, batch)]


def train_ldm(data, ctx, out: Path, *, ae_epochs: int = 30, unet_epochs: int = 60, batch: int = 128, lr: float = 2e-3,
              width: int = 64, latent_channels: int = 4, null_prob: float = 0.1) -> dict:
    """Fit the autoencoder, then the class-conditional UNet; save to ``out``; return metrics."""
    diffusers = require_diffusers()
    dev = ctx.device
    unit, labels = _unit_set(data, dev)
    x = unit * 2 - 1
    h = int(data.im_size[0])
    if data.im_size[0] != data.im_size[1] or h % 2:
        raise ValueError(f"the built-in LDM needs square images with an even side, got {data.im_size}")
    groups = min(32, width // 2)
    with ctx.fork_rng("prior-ldm-init"):
        vae = diffusers.AutoencoderKL(
            in_channels=data.channels, out_channels=data.channels,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(width // 2, width), layers_per_block=1, latent_channels=latent_channels,
            norm_num_groups=groups, sample_size=h).to(dev)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    ae_loss = torch.zeros(())
    for ep in ctx.progress(range(ae_epochs), total=ae_epochs, desc="prior ldm: autoencoder"):
        with ctx.fork_rng("prior-ldm-ae", ep):
            for idx in _batches(len(labels), batch, ctx.generator("prior-ldm-ae-perm", ep), dev):
                post = vae.encode(x[idx]).latent_dist
                rec = vae.decode(post.sample()).sample
                ae_loss = F.mse_loss(rec, x[idx]) + 1e-5 * post.kl().mean()
                opt.zero_grad(set_to_none=True)
                ae_loss.backward()
                opt.step()
    vae.eval()
    with torch.no_grad():
        lat = torch.cat([vae.encode(x[i:i + 256]).latent_dist.mean for i in range(0, len(x), 256)])
    scale = float(1.0 / lat.std().clamp(min=1e-6))
    vae.register_to_config(scaling_factor=scale)
    lat = lat * scale

    k = data.num_classes
    s = int(lat.shape[-1])
    with ctx.fork_rng("prior-ldm-unet-init"):
        unet = diffusers.UNet2DModel(
            sample_size=s, in_channels=latent_channels, out_channels=latent_channels,
            block_out_channels=(width, 2 * width), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1, num_class_embeds=k + 1,
            norm_num_groups=groups).to(dev)
    sched = diffusers.DDIMScheduler(**LDM_SCHEDULE)
    alphas = sched.alphas_cumprod.to(dev)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr)
    unet_loss = torch.zeros(())
    for ep in ctx.progress(range(unet_epochs), total=unet_epochs, desc="prior ldm: unet"):
        g = ctx.generator("prior-ldm-unet", ep)
        for idx in _batches(len(labels), batch, g, dev):
            n = len(idx)
            t = torch.randint(0, LDM_SCHEDULE["num_train_timesteps"], (n,), generator=g).to(dev, non_blocking=True)
            eps = torch.randn(n, *lat.shape[1:], generator=g).to(dev, non_blocking=True)
            y = torch.where(torch.rand(n, generator=g).to(dev, non_blocking=True) < null_prob, torch.full_like(labels[idx], k), labels[idx])
            a = alphas[t].view(-1, 1, 1, 1)
            noisy = a.sqrt() * lat[idx] + (1 - a).sqrt() * eps
            unet_loss = F.mse_loss(unet(noisy, t, class_labels=y).sample, eps)
            opt.zero_grad(set_to_none=True)
            unet_loss.backward()
            opt.step()
        if ep % 10 == 0 or ep == unet_epochs - 1:
            ctx.log(ep, unet_loss=float(unet_loss.detach()))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vae.cpu().save_pretrained(str(out / "vae"))
    unet.cpu().save_pretrained(str(out / "unet"))
    sched.save_pretrained(str(out / "scheduler"))
    config = {"channels": data.channels, "im_size": list(data.im_size), "num_classes": k}
    atomic_write_json(out / "prior.json", {"pd_prior": "ldm", "format": 1, "config": config,
                                           "parts": ["unet", "vae", "scheduler"], "scaling_factor": scale})
    return {"kind": "ldm", "ae_loss": float(ae_loss), "unet_loss": float(unet_loss),
            "ae_epochs": ae_epochs, "unet_epochs": unet_epochs}
