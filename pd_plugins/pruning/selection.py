"""The one selection rule every score-based pruner shares.

Within each class (or over the whole set when ``balanced=False``), samples are ordered
by (score ascending, index ascending) so ties break deterministically. Then either

* a **ratio** keeps ``k = floor(keep * n)`` samples: the first ``k`` (``direction="easy"``,
  lowest scores) or the last ``k`` (``direction="hard"``), Moser et al.'s rounding; or
* a **window** ``[lo, hi)`` keeps ascending positions ``floor(lo*n) .. floor(hi*n)-1``
  (Sundar et al.'s percentile band), with ``lo*n`` and ``hi*n`` snapped to the nearest
  integer when within 1e-9 of it.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

from pd_plugins.errors import OptionsError, DataError


def _floor_snapped(x: float) -> int:
    r = round(x)
    return int(r) if abs(x - r) < 1e-9 else int(math.floor(x))


def band(n: int, keep: Optional[float], window: Optional[Sequence[float]], direction: str) -> tuple[int, int]:
    """Positions ``[start, stop)`` kept among ``n`` ascending-ordered samples."""
    if window is not None:
        lo, hi = float(window[0]), float(window[1])
        return _floor_snapped(lo * n), _floor_snapped(hi * n)
    k = _floor_snapped(float(keep) * n)
    if direction == "easy":
        return 0, k
    if direction == "hard":
        return n - k, n
    raise OptionsError(f"direction must be 'easy' or 'hard', got {direction!r}")


def validate_window(window: Sequence[float]) -> tuple[float, float]:
    """Check a percentile window given as fractions in [0, 1] with lo < hi."""
    if len(window) != 2:
        raise OptionsError(f"window needs two values lo,hi; got {list(window)}")
    lo, hi = float(window[0]), float(window[1])
    if not (0.0 <= lo <= 1.0 and 0.0 <= hi <= 1.0):
        raise OptionsError(f"window must lie in [0, 1] (or [0, 100] as percentiles); got [{lo}, {hi}]")
    if lo >= hi:
        raise OptionsError(f"window needs lo < hi; got [{lo}, {hi}]")
    return lo, hi


def select(
    scores,
    labels,
    num_classes: int,
    *,
    keep: Optional[float] = None,
    window: Optional[Sequence[float]] = None,
    direction: str = "easy",
    balanced: bool = True,
    allow_empty: bool = False,
):
    """Select positions from per-sample ``scores``; returns ``(sorted_positions, meta)``.

    ``meta`` records the rule (direction, keep or window, balance, rounding) and the
    per-class kept counts.
    """
    import torch

    scores = torch.as_tensor(scores).double().cpu()
    labels = torch.as_tensor(labels).long().cpu()
    if scores.shape[0] != labels.shape[0]:
        raise DataError(f"{scores.shape[0]} scores for {labels.shape[0]} samples")
    if torch.isnan(scores).any():
        raise DataError("scores contain NaN; every sample must be scored before selection")
    if window is None and keep is None:
        raise OptionsError("selection needs a keep ratio or a window")
    if window is not None:
        window = validate_window(window)
    elif not (0.0 < float(keep) <= 1.0):
        raise OptionsError(f"keep ratio must be in (0, 1], got {keep}")

    groups = [torch.nonzero(labels == c).flatten() for c in range(num_classes)] if balanced else [torch.arange(labels.numel())]
    kept = []
    for c, pos in enumerate(groups):
        n = int(pos.numel())
        if n == 0:
            continue
        # order by (score asc, index asc): stable sort over index-ordered positions
        order = torch.sort(scores[pos], stable=True).indices
        start, stop = band(n, keep, window, direction)
        chosen = pos[order[start:stop]]
        if chosen.numel() == 0 and not allow_empty:
            where = f"class {c}" if balanced else "the dataset"
            raise OptionsError(
                f"selection keeps 0 of {n} samples in {where}; raise keep/widen the window or allow empty classes"
            )
        kept.append(chosen)
    positions = torch.sort(torch.cat(kept)).values if kept else torch.zeros(0, dtype=torch.long)
    counts = torch.bincount(labels[positions], minlength=num_classes).tolist()
    meta = {
        "direction": direction,
        "keep": None if window is not None else float(keep),
        "window": list(window) if window is not None else None,
        "balanced": bool(balanced),
        "rounding": "floor(r*n_c) (Moser); window floor(lo*n)..floor(hi*n)-1",
        "per_class_kept": counts,
    }
    return positions, meta


def selection_edge(meta: dict, scores) -> Optional[str]:
    """The end of a recorded selection that its ``count``-sample core starts from, or None.

    ``"low"`` for a window (its lower percentile ``lo``: Sundar et al. discard the lowest-EL2N
    samples up to the chosen percentile and keep what follows; the upper bound only fences
    off the noisy top) and for ``direction="easy"``; ``"high"`` for ``direction="hard"``.
    None without a score-based rule: no scores, or NaN ones (random, ``--subset``, no pruner).
    """
    import torch

    if scores is None or torch.isnan(torch.as_tensor(scores)).any():
        return None
    if meta.get("window") is not None:
        return "low"
    return {"easy": "low", "hard": "high"}.get(meta.get("direction"))


def take_at_edge(scores, labels, kept, num_classes: int, count: int, edge: Optional[str], *, what: str = "selection"):
    """Exactly ``count`` of the ``kept`` positions per class, at ``edge`` of the class's ascending order.

    Within a class the kept positions are ordered by (score ascending, index ascending), as in
    :func:`select`; ``"low"`` takes the first ``count``, ``"high"`` the last ``count``. Without
    an edge (no scores) a class must hold exactly ``count`` kept samples: they are taken as they
    are. A class holding fewer than ``count`` is an :class:`OptionsError`. Returns sorted positions.
    """
    import torch

    if edge not in (None, "low", "high"):
        raise OptionsError(f"edge must be 'low', 'high' or None, got {edge!r}")
    kept = torch.as_tensor(kept).long().cpu()
    labels = torch.as_tensor(labels).long().cpu()[kept]
    if edge is not None:
        scores = torch.as_tensor(scores).double().cpu()[kept]
        if torch.isnan(scores).any():
            raise DataError(f"{what}: kept samples without scores cannot be ordered")
    chosen = []
    for c in range(num_classes):
        pos = torch.nonzero(labels == c).flatten()  # ascending kept position, hence ascending index
        n = int(pos.numel())
        if n < count:
            raise OptionsError(f"{what}: class {c} kept {n} sample(s), fewer than the {count} needed; "
                               "keep more (raise --keep / widen the window) or lower --ipc")
        if edge is None:
            if n != count:
                raise OptionsError(f"{what}: class {c} kept {n} samples and the selection has no scores to take "
                                   f"{count} of them from an edge; keep exactly {count} per class")
            chosen.append(kept[pos])
            continue
        order = pos[torch.sort(scores[pos], stable=True).indices]
        chosen.append(kept[order[:count] if edge == "low" else order[n - count:]])
    return torch.sort(torch.cat(chosen)).values if chosen else torch.zeros(0, dtype=torch.long)


def class_kl(kept_labels, all_labels, num_classes: int) -> float:
    """KL(pruned class histogram || original class histogram), in nats (Sundar et al., Table 4)."""
    import torch

    p = torch.bincount(torch.as_tensor(kept_labels).long(), minlength=num_classes).double()
    q = torch.bincount(torch.as_tensor(all_labels).long(), minlength=num_classes).double()
    p = p / p.sum()
    q = q / q.sum()
    mask = p > 0
    return float((p[mask] * (p[mask] / q[mask]).log()).sum())
