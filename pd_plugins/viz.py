"""Image grids and plots written atomically into run directories."""
from __future__ import annotations

from pathlib import Path

from pd_plugins.io import atomic_path


def save_image_grid(images_unit, path, nrow: int = 10, upscale_to: int = 32) -> None:
    """Save (N, C, H, W) images in [0, 1] pixel space as one PNG grid (clamped for display).

    Tiny images (e.g. 8x8 digits) are upscaled with nearest-neighbour so the grid is legible.
    """
    import torch
    import torch.nn.functional as F
    from torchvision.utils import make_grid
    from PIL import Image

    x = images_unit.detach().float().clamp(0, 1)
    h = x.shape[-1]
    if h < upscale_to:
        x = F.interpolate(x, scale_factor=max(1, upscale_to // h), mode="nearest")
    grid = make_grid(x, nrow=nrow, padding=2, pad_value=1.0)
    arr = (grid.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy())
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    with atomic_path(Path(path), suffix=".png") as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
