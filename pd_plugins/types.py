"""Data objects passed between stages: datasets, prune results, distill results, eval results.

torch is imported inside methods only, so importing this module stays cheap.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch


def sha256_json(obj: Any) -> str:
    """Stable sha256 of a JSON-serialisable object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def tensor_digest(t: "torch.Tensor") -> str:
    """sha256 of a tensor's dtype, shape and bytes."""
    h = hashlib.sha256()
    h.update(str(t.dtype).encode())
    h.update(str(tuple(t.shape)).encode())
    h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _load_artifact(path, what: str, required: Sequence[str]) -> dict:
    """A saved stage result as a dict; a missing file, a bad checkpoint or missing keys are a DataError."""
    from pd_plugins.errors import DataError
    from pd_plugins.io import safe_torch_load

    saved = safe_torch_load(path, what)
    missing = [k for k in required if not isinstance(saved, dict) or k not in saved]
    if missing:
        raise DataError(f"{what} {path} lacks {', '.join(missing)}")
    return saved


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image set held as one tensor.

    ``pixels`` is either raw ``uint8`` pixels (``normalized=False``; value ``pixel_max``
    maps to 1.0) or float32 images already in normalised space (``normalized=True``,
    e.g. a distilled set). :meth:`images` always returns normalised float32.

    ``index`` holds each sample's position in the *source* dataset, so a subset can be
    traced back after any number of :meth:`subset` calls.
    """

    pixels: "torch.Tensor"
    labels: "torch.Tensor"
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    index: "torch.Tensor"
    source_id: str
    class_names: tuple[str, ...] = ()
    pixel_max: float = 255.0
    normalized: bool = False
    allow_flip: bool = True

    # -- shape -----------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def im_size(self) -> tuple[int, int]:
        return (int(self.pixels.shape[2]), int(self.pixels.shape[3]))

    @property
    def soft(self) -> bool:
        return self.labels.dim() == 2

    @property
    def hard_labels(self) -> "torch.Tensor":
        """(N,) int64 labels; the argmax for soft labels."""
        return self.labels.argmax(1) if self.soft else self.labels

    # -- access ----------------------------------------------------------------
    def images(self, idx=None, device=None) -> "torch.Tensor":
        """Normalised float32 images at positions ``idx`` (all when None), on ``device``."""
        x = self.pixels if idx is None else self.pixels[idx]
        if device is not None:
            x = x.to(device, non_blocking=True)
        return self.normaliser(x.device)(x)

    def normaliser(self, device) -> "Callable[[torch.Tensor], torch.Tensor]":
        """A function from stored pixels on ``device`` (any batch of them) to normalised float32 images;
        its constants are moved to the device once, so a loop calling it copies nothing per batch."""
        import torch

        if self.normalized:
            return lambda raw: raw.float()
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1).to(device)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1).to(device)
        scale = float(self.pixel_max)
        return lambda raw: (raw.float() / scale - mean) / std

    def to_unit(self, images: "torch.Tensor") -> "torch.Tensor":
        """Map normalised images back to [0, 1] pixel space (not clamped)."""
        import torch

        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return images * std + mean

    def subset(self, positions) -> "ImageDataset":
        """A view of the samples at ``positions`` (into *this* dataset), keeping source indices."""
        import torch

        positions = torch.as_tensor(positions, dtype=torch.long)
        return replace(
            self,
            pixels=self.pixels[positions],
            labels=self.labels[positions],
            index=self.index[positions],
        )

    def by_class(self) -> list["torch.Tensor"]:
        """Positions of each class's samples, in ascending order (one tensor per class)."""
        import torch

        y = self.hard_labels
        return [torch.nonzero(y == c, as_tuple=False).flatten() for c in range(self.num_classes)]

    def class_counts(self) -> list[int]:
        import torch

        return torch.bincount(self.hard_labels, minlength=self.num_classes).tolist()

    def fingerprint(self) -> str:
        """Identity of this exact sample set: source content plus source indices."""
        h = hashlib.sha256()
        h.update(self.source_id.encode())
        h.update(self.index.cpu().contiguous().numpy().tobytes())
        h.update(str((tuple(self.pixels.shape), self.mean, self.std, self.normalized)).encode())
        return h.hexdigest()

    def describe(self) -> dict:
        """JSON-able summary recorded in configs and manifests."""
        return {
            "name": self.name,
            "size": len(self),
            "channels": self.channels,
            "im_size": list(self.im_size),
            "num_classes": self.num_classes,
            "mean": list(self.mean),
            "std": list(self.std),
            "class_counts": self.class_counts(),
            "fingerprint": self.fingerprint(),
        }


@dataclass(frozen=True)
class DataSplits:
    """What a dataset plugin returns: a train split (pruned and distilled) and a test split."""

    train: ImageDataset
    test: ImageDataset


class DatasetFactory(Protocol):
    """What a dataset plugin registers: ``factory(root, **options) -> DataSplits``.

    ``root`` is ``--data-root`` (None when not given); ``options`` are the ``dataset_options``
    (keyword-only parameters with defaults; the host types them from the signature).
    """

    def __call__(self, root: Optional[str], **options: Any) -> DataSplits: ...


@dataclass
class PruneResult:
    """Kept positions (sorted, into the pruner's *input* dataset) and per-sample scores."""

    keep: "torch.Tensor"
    scores: Optional["torch.Tensor"]
    pruner: str
    options: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    source_index: Optional["torch.Tensor"] = None  # positions in the source dataset (recorded when saved)

    def save(self, path, *, fingerprint: Optional[str] = None) -> None:
        """Write the result atomically to ``path`` (``prune.pt``), with the stage's ``fingerprint``."""
        from pd_plugins.io import atomic_torch_save

        atomic_torch_save({"keep": self.keep, "source_index": self.source_index, "scores": self.scores,
                           "pruner": self.pruner, "options": self.options, "meta": self.meta,
                           "fingerprint": fingerprint}, path)

    @classmethod
    def load(cls, path) -> "PruneResult":
        """Read a result written by :meth:`save` (``torch.load`` with ``weights_only=True``)."""
        saved = _load_artifact(path, "prune result", ("keep", "scores", "pruner"))
        return cls(keep=saved["keep"], scores=saved["scores"], pruner=saved["pruner"],
                   options=saved.get("options") or {}, meta=saved.get("meta") or {},
                   source_index=saved.get("source_index"))

    def apply(self, data: ImageDataset) -> ImageDataset:
        return data.subset(self.keep)

    def mask(self, n: int) -> "torch.Tensor":
        import torch

        m = torch.zeros(n, dtype=torch.bool)
        m[self.keep] = True
        return m

    def keep_ratio(self, n: int) -> float:
        return int(self.keep.numel()) / max(n, 1)


@dataclass
class DistillResult:
    """A synthetic set in the input's normalised space (or ZCA space, see ``zca``), plus how it was made."""

    images: "torch.Tensor"
    labels: "torch.Tensor"
    ipc: int
    distiller: str
    options: dict = field(default_factory=dict)
    lr: Optional[float] = None
    latents: Optional[dict] = None
    generator: Optional[dict] = None
    history: list = field(default_factory=list)
    source: str = ""
    meta: dict = field(default_factory=dict)
    zca: Optional[dict] = None  # the ZCA state (pd_plugins.data.zca) when the images live in ZCA space

    @property
    def soft(self) -> bool:
        return self.labels.dim() == 2

    def save(self, path, *, fingerprint: Optional[str] = None) -> None:
        """Write the set and how it was made atomically to ``path`` (``distill.pt``), tensors on the CPU."""
        from pd_plugins.io import atomic_torch_save

        atomic_torch_save({
            "images": self.images.detach().cpu(), "labels": self.labels.detach().cpu(), "ipc": self.ipc,
            "distiller": self.distiller, "options": self.options, "lr": self.lr, "latents": self.latents,
            "generator": self.generator, "history": self.history, "source": self.source, "meta": self.meta,
            "zca": self.zca, "fingerprint": fingerprint,
        }, path)

    @classmethod
    def load(cls, path) -> "DistillResult":
        """Read a result written by :meth:`save` (``torch.load`` with ``weights_only=True``)."""
        saved = _load_artifact(path, "distill result", ("images", "labels", "ipc", "distiller"))
        optional = {k: saved[k] for k in ("options", "lr", "latents", "generator", "history", "source", "meta", "zca")
                    if saved.get(k) is not None}
        return cls(images=saved["images"], labels=saved["labels"], ipc=saved["ipc"], distiller=saved["distiller"],
                   **optional)

    def as_dataset(self, like: ImageDataset) -> ImageDataset:
        """Wrap the synthetic images as an :class:`ImageDataset` with ``like``'s metadata."""
        import torch

        n = int(self.images.shape[0])
        return replace(
            like,
            pixels=self.images.detach().cpu().float(),
            labels=self.labels.detach().cpu(),
            index=torch.full((n,), -1, dtype=torch.long),
            normalized=True,
            name=f"{like.name}:distilled",
            source_id=self.source or like.source_id,
        )


@dataclass
class EvalResult:
    """Accuracies of fresh networks trained on a set, one per repeat."""

    protocol: str
    model: str
    accs: Sequence[float]
    options: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(sum(self.accs) / len(self.accs)) if self.accs else float("nan")

    @property
    def std(self) -> float:
        n = len(self.accs)
        if n < 2:
            return 0.0
        m = self.mean
        return float((sum((a - m) ** 2 for a in self.accs) / (n - 1)) ** 0.5)

    def to_json(self) -> dict:
        return {
            "protocol": self.protocol,
            "model": self.model,
            "accs": list(self.accs),
            "mean": self.mean,
            "std": self.std,
            "options": self.options,
            "meta": self.meta,
        }
