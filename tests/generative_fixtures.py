"""Tiny datasets and priors for the generative tests."""
from __future__ import annotations

import torch

from pd_plugins.types import ImageDataset


def tiny_data(n_per=6, k=3, c=1, hw=8, seed=0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    n = n_per * k
    return ImageDataset(pixels=torch.randint(0, 256, (n, c, hw, hw), generator=g, dtype=torch.uint8),
                        labels=torch.arange(k).repeat_interleave(n_per), num_classes=k, mean=(0.3,) * c,
                        std=(0.25,) * c, name="tiny", index=torch.arange(n), source_id="tiny", allow_flip=False)


def tiny_ldm(tmp_path, k=3, c=1, hw=8):
    """Untrained tiny diffusers UNet + AutoencoderKL saved as an ldm prior."""
    import diffusers

    from pd_plugins.distillation.generative.ldm import LDM_SCHEDULE

    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(in_channels=c, out_channels=c, down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8),
                                  layers_per_block=1, latent_channels=2, norm_num_groups=4, sample_size=hw)
    unet = diffusers.UNet2DModel(sample_size=hw // 2, in_channels=2, out_channels=2, block_out_channels=(8, 8),
                                 down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                                 layers_per_block=1, num_class_embeds=k + 1, norm_num_groups=4)
    out = tmp_path / "ldm"
    vae.save_pretrained(str(out / "vae"))
    unet.save_pretrained(str(out / "unet"))
    diffusers.DDIMScheduler(**LDM_SCHEDULE).save_pretrained(str(out / "scheduler"))
    return out
