"""ZCA whitening as MTT and its successors use it on CIFAR (kornia, eps 0.1).

The transform is fitted on the real pool a distiller sees, on images at [0, 1] pixel scale, and
replaces mean/std normalisation: real batches, expert training, the synthetic set (which lives
in ZCA space) and the test set all pass through the same transform; the inverse is only for
viewing. Its state (mean vector, matrix, eps, the fingerprint of the fit set) is stored with the
distilled set (``DistillResult.zca``, ``distill.pt``, the pt/safetensors exports) so evaluation --
also ``pd-run eval --images`` -- re-applies exactly the transform the set was distilled under.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from pd_plugins.errors import DataError
from pd_plugins.types import ImageDataset, sha256_json, tensor_digest

EPS = 0.1  # MTT: kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True), fitted on the train set
_CHUNK = 4096


@dataclass(frozen=True, eq=False)
class ZCA:
    """A fitted ZCA transform ``z = (x - mean) @ matrix`` on flattened [0, 1] images."""

    mean: torch.Tensor  # (D,) float32
    matrix: torch.Tensor  # (D, D) float32, symmetric
    eps: float = EPS
    fitted_on: str = ""

    @classmethod
    def fit(cls, data: ImageDataset, eps: float = EPS) -> "ZCA":
        """Fit on every image of ``data`` (unbiased covariance, in float64 for a stable SVD)."""
        from kornia.enhance import zca_mean

        if len(data) < 2:
            raise DataError("ZCA whitening needs at least two images to fit")
        unit = data.to_unit(data.images()).flatten(1).double()
        matrix, mean, _ = zca_mean(unit, dim=0, unbiased=True, eps=float(eps))
        return cls(mean=mean.reshape(-1).float(), matrix=matrix.float(), eps=float(eps), fitted_on=data.fingerprint())

    # -- applying -----------------------------------------------------------------------
    def whiten(self, unit: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images at [0, 1] scale -> ZCA space (same shape)."""
        from kornia.enhance import linear_transform

        self._check(unit)
        flat = unit.flatten(1).float()
        m, t = self.mean.to(flat.device).view(1, -1), self.matrix.to(flat.device)
        out = torch.cat([linear_transform(flat[i:i + _CHUNK], t, m, dim=0) for i in range(0, flat.shape[0], _CHUNK)])
        return out.view_as(unit)

    def unwhiten(self, z: torch.Tensor) -> torch.Tensor:
        """ZCA-space images -> [0, 1] scale (not clamped); for viewing and PNG export."""
        self._check(z)
        inverse = torch.linalg.inv(self.matrix.double()).to(z.device)
        return (z.flatten(1).double() @ inverse + self.mean.to(z.device).double()).float().view_as(z)

    def apply(self, data: ImageDataset) -> ImageDataset:
        """``data`` with its images whitened (a normalised-space dataset whose identity names the transform)."""
        z = self.whiten(data.to_unit(data.images()))
        return replace(data, pixels=z, normalized=True, name=f"{data.name}:zca",
                       source_id=sha256_json({"source": data.source_id, "zca": self.identity()}))

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x[0].numel() != self.mean.numel():
            raise DataError(f"ZCA transform expects images of {self.mean.numel()} values (C*H*W), "
                            f"got shape {tuple(x.shape)}")

    # -- identity and storage -------------------------------------------------------------
    def identity(self) -> dict:
        """What the transform is: part of every cache key and fingerprint that depends on it."""
        return {"eps": self.eps, "fitted_on": self.fitted_on, "matrix": tensor_digest(self.matrix)[:32]}

    def state(self) -> dict:
        return {"mean": self.mean.detach().cpu(), "matrix": self.matrix.detach().cpu(), "eps": self.eps,
                "fitted_on": self.fitted_on}

    @classmethod
    def from_state(cls, state: dict, where: str = "ZCA state") -> "ZCA":
        try:
            mean, matrix, eps = state["mean"], state["matrix"], float(state["eps"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}: expected 'mean', 'matrix' and 'eps'") from None
        if not (isinstance(mean, torch.Tensor) and isinstance(matrix, torch.Tensor)) or mean.dim() != 1 \
                or tuple(matrix.shape) != (mean.numel(), mean.numel()):
            raise DataError(f"{where}: 'mean' must be (D,) and 'matrix' (D, D) tensors")
        if not (torch.isfinite(mean).all() and torch.isfinite(matrix).all()) or eps <= 0:
            raise DataError(f"{where}: non-finite values or eps <= 0")
        return cls(mean=mean.float(), matrix=matrix.float(), eps=eps, fitted_on=str(state.get("fitted_on", "")))


def in_set_space(data: ImageDataset, state: Optional[dict]) -> ImageDataset:
    """``data`` in the space a distilled set lives in: whitened when the set carries a ZCA state."""
    return data if state is None else ZCA.from_state(state).apply(data)


def unit_images(images: torch.Tensor, like: ImageDataset, state: Optional[dict]) -> torch.Tensor:
    """A distilled set's images at [0, 1] pixel scale for viewing: un-whitened, or de-normalised."""
    images = images.detach().cpu().float()
    return like.to_unit(images) if state is None else ZCA.from_state(state).unwhiten(images)
