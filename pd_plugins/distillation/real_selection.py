"""SelectionDistiller: the base of distillers whose synthetic set is a choice of real images.

A subclass implements :meth:`SelectionDistiller.select`, which returns, for every class, the
positions (into the pool) of its ``ipc`` chosen images; the base checks the choice and builds
the :class:`~pd_plugins.types.DistillResult`: the real images class-major with hard labels, the
positions and source indices recorded in ``meta[record_key]``. The coreset baselines (random,
herding, k-center, forgetting) are built on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Optional, Sequence, Union

from pd_plugins.errors import DataError, OptionsError
from pd_plugins.strategies import Distiller

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from pd_plugins.pipeline.context import RunContext
    from pd_plugins.types import DistillResult, ImageDataset

#: one class's chosen positions into the pool: a 1-D integer tensor or a list of ints
Indices = Union["torch.Tensor", Sequence[int]]


@dataclass
class Selection:
    """What :meth:`SelectionDistiller.select` may return to record more than the positions."""

    per_class: Sequence[Indices]
    record: dict = field(default_factory=dict)


class SelectionDistiller(Distiller):
    """A distiller that returns ``ipc`` real pool images per class (mode ``pool`` only)."""

    record_key: ClassVar[str] = "selection"
    """The key of ``DistillResult.meta`` that records the choice."""

    @classmethod
    def uses_real_init(cls, options) -> bool:
        return True  # every class of the pool must hold ipc images

    @classmethod
    def starts_from_chosen_set(cls, options) -> bool:
        return False  # it chooses the real images itself: mode init does not apply

    def select(self, data: "ImageDataset", ipc: int, ctx: "RunContext") -> Union[Sequence[Indices], Selection]:
        """For every class ``c`` (in order), ``ipc`` distinct positions into ``data`` of samples of
        class ``c``; or a :class:`Selection` that adds a JSON-able record."""
        raise NotImplementedError

    def distill(self, data: "ImageDataset", ipc: int, ctx: "RunContext",
                init_pool: Optional["ImageDataset"] = None) -> "DistillResult":
        import torch

        from pd_plugins.distillation.synthetic import class_major_labels
        from pd_plugins.options import as_dict
        from pd_plugins.types import DistillResult

        if init_pool is not None and init_pool.fingerprint() != data.fingerprint():
            raise OptionsError(f"distiller {self.name!r} selects real images from the pool itself; mode 'init' "
                               "(a pruned set seeding a distiller) does not apply to it -- use mode pool")
        chosen = self.select(data, ipc, ctx)
        selection = chosen if isinstance(chosen, Selection) else Selection(chosen)
        positions = class_major_positions(data, ipc, selection.per_class, self.name)
        labels = class_major_labels(data.num_classes, ipc)
        record = {"positions": positions.tolist(), "source_index": data.index[positions].tolist(), **selection.record}
        assert torch.equal(data.hard_labels[positions], labels)
        return DistillResult(images=data.images(positions).cpu(), labels=labels, ipc=ipc, distiller=self.name,
                             options=as_dict(self.options), source=data.fingerprint(), meta={self.record_key: record})


def class_major_positions(data: "ImageDataset", ipc: int, per_class: Sequence[Indices], who: str = "selection"):
    """The per-class choices concatenated class-major, after checking each holds ``ipc`` distinct
    in-range positions of its own class (one-line :class:`DataError` otherwise)."""
    import torch

    if len(per_class) != data.num_classes:
        raise DataError(f"{who}: select() returned {len(per_class)} index lists for {data.num_classes} classes")
    y = data.hard_labels
    chunks = []
    for c, idx in enumerate(per_class):
        idx = torch.as_tensor(idx, dtype=torch.long).flatten()
        if idx.numel() != ipc or idx.unique().numel() != ipc:
            raise DataError(f"{who}: class {c}: the selection returned {idx.numel()} positions "
                            f"({idx.unique().numel()} distinct) for ipc {ipc}")
        if bool(((idx < 0) | (idx >= len(data))).any()):
            raise DataError(f"{who}: class {c}: positions out of range for a pool of {len(data)}")
        wrong = idx[y[idx] != c]
        if wrong.numel():
            raise DataError(f"{who}: class {c}: positions {wrong[:3].tolist()} hold samples of another class")
        chunks.append(idx)
    return torch.cat(chunks)
