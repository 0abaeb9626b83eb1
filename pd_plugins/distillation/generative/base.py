"""The generator plugin interface and what every generator shares.

A generator is a *frozen prior*: its weights never receive gradients; only the latents do.
It maps a dict of per-image latent tensors (first dim = image) plus hard labels to images
at the dataset's size, in the dataset's normalised space (mean/std taken from the dataset).
"""
from __future__ import annotations

import hashlib
from typing import ClassVar, Optional

import torch
from torch import nn

from pd_plugins.pipeline.context import RunContext
from pd_plugins.errors import DataError
from pd_plugins.options import as_dict
from pd_plugins.strategies import Strategy
from pd_plugins.types import ImageDataset


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False`` on every parameter."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def weights_fingerprint(*modules: nn.Module) -> str:
    """sha256 over every named parameter and buffer of ``modules`` (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    for i, m in enumerate(modules):
        for name, t in sorted(m.state_dict().items()):
            h.update(f"{i}:{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class Generator(Strategy):
    """A frozen generative prior: ``init_latents`` and ``decode(latents, labels, aux)``."""

    #: learning-rate role of each latent: "img" (feature maps / x_T) or "w" (codes, conditioning)
    latent_roles: ClassVar[dict[str, str]] = {}

    @classmethod
    def kind(cls) -> str:
        return "generator"

    @classmethod
    def check_weights(cls, options) -> None:
        """Check the prior that ``options`` name (kind, format) without loading it; raise DataError."""

    @classmethod
    def check_geometry(cls, options, data: ImageDataset) -> None:
        """Check that the prior ``options`` name fits ``data`` (channels, size, classes) without
        loading its networks; raise DataError."""

    def __init__(self, options, data: ImageDataset, ctx: RunContext):
        super().__init__(options)
        self.channels = data.channels
        self.im_size = data.im_size
        self.num_classes = data.num_classes
        self.device = ctx.device
        self._mean = torch.tensor(data.mean, dtype=torch.float32, device=ctx.device).view(1, -1, 1, 1)
        self._std = torch.tensor(data.std, dtype=torch.float32, device=ctx.device).view(1, -1, 1, 1)

    # -- what subclasses provide ---------------------------------------------------
    def latent_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-image shape of each latent tensor."""
        raise NotImplementedError

    def init_latents(self, init_pool: ImageDataset, ipc: int, ctx: RunContext) -> dict[str, torch.Tensor]:
        """Class-major initial latents (``ipc`` per class), detached, on the run's device."""
        raise NotImplementedError

    def decode(self, latents: dict[str, torch.Tensor], labels: torch.Tensor, aux: dict[str, torch.Tensor]) -> torch.Tensor:
        """Images in the dataset's normalised space, shape (n, C, H, W)."""
        raise NotImplementedError

    def modules(self) -> list[nn.Module]:
        """The frozen networks (for the fingerprint and the no-grad check)."""
        raise NotImplementedError

    def aux(self, key, n: int, ctx: RunContext) -> dict[str, torch.Tensor]:
        """Per-image random inputs for one render (e.g. diffusion noise), drawn once from ``key``
        and reused by every re-render of that iteration. Deterministic generators return ``{}``."""
        return {}

    # -- shared ------------------------------------------------------------------------
    def normalise_unit(self, unit: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels at any size -> the dataset's size and normalised space."""
        if tuple(unit.shape[-2:]) != tuple(self.im_size):
            unit = torch.nn.functional.interpolate(unit, size=self.im_size, mode="bilinear", align_corners=False)
        return (unit - self._mean) / self._std

    def unit_pixels(self, pool_images: torch.Tensor) -> torch.Tensor:
        """Normalised dataset images -> [0, 1] pixels."""
        return (pool_images * self._std + self._mean).clamp(0, 1)

    def fingerprint(self) -> str:
        return weights_fingerprint(*self.modules())

    def describe(self) -> dict:
        """What the DistillResult stores so images can be re-rendered."""
        return {"name": self.name, "options": as_dict(self.options), "fingerprint": self.fingerprint()}

    def check_data(self, saved: dict, where: str) -> None:
        """Refuse a prior trained for another image geometry or class count."""
        check_trained_for(saved, {"channels": self.channels, "im_size": list(self.im_size),
                                  "num_classes": self.num_classes}, where)


def check_trained_for(saved: dict, want: dict, where: str) -> None:
    """Refuse a prior whose recorded dataset config differs from ``want`` in any of its keys."""
    got = {k: (list(saved[k]) if k == "im_size" else saved[k]) for k in want if k in saved}
    if got != {k: want[k] for k in got} or len(got) != len(want):
        raise DataError(f"prior {where} was trained for {got}, but the dataset has {want}")


def class_real_images(init_pool: ImageDataset, ipc: int, generator: torch.Generator) -> torch.Tensor:
    """``ipc`` distinct random real images per class from the (pruned) pool, class-major, normalised."""
    from pd_plugins.distillation.synthetic import initial_images

    return initial_images(init_pool, ipc, "real", generator, "cpu")


def generator_options(name: str, values: Optional[dict], registry=None) -> tuple[type, object]:
    """Generator class ``name`` from ``registry`` (default: the process host's) and its options from
    ``values`` (unknown keys ignored)."""
    import dataclasses

    if registry is None:
        from pd_plugins.plugins import registries

        registry = registries()["generator"]
    cls = registry.load(name)
    fields = {f.name for f in dataclasses.fields(cls.Options)}
    return cls, cls.resolve_options({k: v for k, v in (values or {}).items() if k in fields and v is not None})


def make_generator(name: str, values: Optional[dict], data: ImageDataset, ctx: RunContext) -> Generator:
    """Build generator ``name`` from the registry with option ``values`` (unknown keys ignored)."""
    cls, opts = generator_options(name, values, ctx.registry("generator"))
    return cls(opts, data, ctx)
