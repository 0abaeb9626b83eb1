"""Pieces every distiller shares: the real pool, synthetic initialisation, and the
iteration loop with progress, logging, checkpoint/resume and the divergence guard."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from pd_plugins.pipeline.context import RunContext
from pd_plugins.errors import DataError, DivergenceError
from pd_plugins.types import ImageDataset


class RealPool:
    """Per-class access to a real dataset, normalised per batch on the run's device.

    The pixels stay in their stored dtype (uint8 for real sets) where the loop reads them -- on the
    device when they fit, else gathered per batch through pinned host memory
    (:class:`~pd_plugins.training.device.DevicePixels`); class positions and the permutations drawn
    from the CPU generator stay on the host.
    """

    def __init__(self, data: ImageDataset, device: str = "cpu"):
        from pd_plugins.training.device import DevicePixels

        self.data = data
        self.device = device
        self.source = DevicePixels(data.pixels, device)
        self.classes = data.by_class()
        self.normalise = data.normaliser(device)  # stored pixels on the device -> normalised float32

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def count(self, c: int) -> int:
        return int(self.classes[c].numel())

    def positions(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """Positions (on the host) of the first ``n`` entries of a fresh random permutation of class ``c``."""
        idx = self.classes[c]
        if idx.numel() == 0:
            raise DataError(f"class {c} has no real samples in the pool")
        perm = torch.randperm(idx.numel(), generator=generator)[: min(n, idx.numel())]
        return idx[perm]

    def sample(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` random real images of class ``c`` (all of them if the class is smaller), on the device."""
        return self.normalise(self.source.take(self.positions(c, n, generator)))

    def labels_of(self, positions: torch.Tensor) -> torch.Tensor:
        return self.data.hard_labels[positions.cpu()].to(self.device)


def class_major_labels(num_classes: int, ipc: int, device="cpu") -> torch.Tensor:
    """``[0]*ipc + [1]*ipc + ...``: the fixed hard labels of a synthetic set."""
    return torch.arange(num_classes, device=device).repeat_interleave(ipc)


def initial_images(init_pool: ImageDataset, ipc: int, init: str, generator: torch.Generator, device="cpu") -> torch.Tensor:
    """Class-major initial synthetic images: ``real`` draws ``ipc`` distinct samples per
    class from ``init_pool`` (the pruned set); ``noise`` draws N(0, 1) in normalised space."""
    k = init_pool.num_classes
    c, (h, w) = init_pool.channels, init_pool.im_size
    if init == "noise":
        return torch.randn(k * ipc, c, h, w, generator=generator).to(device)
    if init != "real":
        raise DataError(f"unknown init {init!r}; use 'real' or 'noise'")
    pool = RealPool(init_pool, "cpu")
    chunks = []
    for cls in range(k):
        if pool.count(cls) < ipc:
            raise DataError(
                f"ipc {ipc} is larger than class {cls}'s {pool.count(cls)} samples in the (pruned) pool; "
                "lower --ipc, keep more, or use init=noise"
            )
        chunks.append(pool.sample(cls, ipc, generator))
    return torch.cat(chunks).to(device)


def check_finite(name: str, value) -> bool:
    v = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    return math.isfinite(v)


def divergence_record(metrics: dict, it: int, watch: tuple[str, ...], positive: tuple[str, ...],
                      last_seen: dict[str, tuple[float, int]]) -> Optional[dict]:
    """What diverged at iteration ``it`` (see :attr:`DivergenceError.record`), or None when every watched
    metric is finite and every ``positive`` one is > 0. The first offending metric is named."""
    bad = [(k, "non-finite") for k in watch if k in metrics and not check_finite(k, metrics[k])]
    bad += [(k, "<= 0") for k in positive
            if k in metrics and k not in dict(bad) and not float(metrics[k]) > 0]
    if not bad:
        return None
    name, reason = bad[0]
    last_value, last_iteration = last_seen.get(name, (None, None))
    return {"quantity": name, "reason": reason, "iteration": it, "value": float(metrics[name]),
            "last_value": last_value, "last_iteration": last_iteration, "kept_after_iteration": it - 1,
            "also": [f"{k} {r}" for k, r in bad[1:]]}


def divergence_message(desc: str, record: dict) -> str:
    """One line: which quantity, at which iteration, its last finite value and what was kept."""
    last = ("" if record["last_value"] is None
            else f" (last value {record['last_value']:.4g} at iteration {record['last_iteration']})")
    also = f"; also {', '.join(record['also'])}" if record.get("also") else ""
    kept = record["kept_after_iteration"]
    what = "the initial synthetic set" if kept < 0 else f"the synthetic state after iteration {kept}"
    hint = ("the objective drove the learned lr to zero or below" if record["reason"] == "<= 0"
            else "lower the image/lr learning rates")
    return (f"{desc}: {record['quantity']} became {record['reason']} ({record['value']:.4g}) at iteration "
            f"{record['iteration']}{last}{also}; kept {what}, the last finite one ({hint})")


def iterate(
    ctx: RunContext,
    total: int,
    step: Callable[[int], dict],
    get_state: Callable[[], dict],
    set_state: Callable[[dict], None],
    *,
    desc: str,
    log_every: int = 10,
    watch: tuple[str, ...] = ("loss",),
    positive: tuple[str, ...] = (),
) -> list[dict]:
    """Run ``step(it)`` for ``it`` in ``[start, total)``, resuming from the stage checkpoint.

    ``step`` returns a metrics dict. If a watched metric becomes non-finite the loop stops
    with :class:`DivergenceError` carrying the last finite state (from ``get_state``); so does
    a ``positive`` metric (e.g. MTT's learned lr) that drops to zero or below.
    Checkpoints hold ``get_state()`` plus the iteration and history; since every random draw
    is keyed by the iteration number, a resumed run equals an uninterrupted one. Scalar metrics
    may stay on the device inside ``step``: they are read here, once an iteration.
    """
    start = 0
    history: list[dict] = []
    saved = ctx.load_checkpoint()
    if saved is not None:
        start = int(saved["iteration"])
        history = list(saved.get("history", []))
        set_state(saved["state"])
    ctx.rewind_log(start)  # rows a killed run logged past its last checkpoint are logged again below
    last_good = get_state() if start < total else None
    # guarded metric -> (its last finite value, that iteration); after a resume, from the logged history
    last_seen = {k: (row[k], row["iteration"]) for row in history for k in (*watch, *positive) if k in row}
    for it in ctx.progress(range(start, total), total=total, initial=start, desc=desc):
        # the iteration's one read from the device: the step keeps its metrics there until now
        metrics = {k: v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v for k, v in step(it).items()}
        record = divergence_record(metrics, it, watch, positive, last_seen)
        if record is not None:
            raise DivergenceError(divergence_message(desc, record), state=last_good, record=record)
        last_seen.update({k: (float(metrics[k]), it) for k in (*watch, *positive) if k in metrics})
        if it % log_every == 0 or it == total - 1:
            row = {"iteration": it, **{k: float(v) for k, v in metrics.items()}}
            history.append(row)
            ctx.log(it, **metrics)
        if ctx.should_checkpoint(it) and it + 1 < total:
            ctx.save_checkpoint({"iteration": it + 1, "history": history, "state": get_state()})
        last_good = get_state()
    ctx.clear_checkpoint()
    return history
