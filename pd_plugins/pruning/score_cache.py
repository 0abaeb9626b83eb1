"""On-disk cache of per-sample pruning scores.

An entry is keyed by a hash of everything that determines the scores (dataset fingerprint,
statistic, scorer recipe with its effective model options, seed and stage key, augmentation,
precision, device type; see :func:`pd_plugins.pruning.scoring.scorer_identity`) and never by the
selection (keep ratio, window, direction), so every selection over the same scores reuses one
scoring pass. Entries are
written atomically; an unreadable or inconsistent entry is reported with a warning and
recomputed.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

from pd_plugins.errors import DataError
from pd_plugins.io import atomic_torch_save, safe_torch_load
from pd_plugins.types import sha256_json

FORMAT = 1


def cache_root(ctx) -> Optional[Path]:
    """``ctx.cache_dir`` (the runner sets it; ``PD_CACHE_DIR`` overrides), or None for no caching."""
    env = os.environ.get("PD_CACHE_DIR")
    if env:
        return Path(env)
    return Path(ctx.cache_dir) if ctx.cache_dir is not None else None


class ScoreCache:
    """Score tensors under ``root/scores/<key>.pt``; ``root=None`` disables caching."""

    def __init__(self, root: Optional[Path]):
        self.root = Path(root) if root is not None else None

    @staticmethod
    def key(identity: dict) -> str:
        return sha256_json({"format": FORMAT, **identity})

    def path(self, key: str) -> Optional[Path]:
        return None if self.root is None else self.root / "scores" / f"{key}.pt"

    def load(self, key: str, n: int):
        """The cached (n,) scores for ``key``, or None (missing, disabled, or corrupt: warns)."""
        path = self.path(key)
        if path is None or not path.exists():
            return None
        try:
            entry = safe_torch_load(path, "score cache entry")
            scores = entry["scores"]
            if entry.get("key") != key or tuple(scores.shape) != (n,):
                raise DataError(f"score cache entry {path} does not match its key or the dataset size {n}")
        except (DataError, KeyError, TypeError, AttributeError) as exc:
            warnings.warn(f"ignoring corrupt score cache entry ({exc}); recomputing", RuntimeWarning, stacklevel=2)
            return None
        return scores

    def save(self, key: str, scores, identity: dict) -> None:
        path = self.path(key)
        if path is not None:
            atomic_torch_save({"key": key, "scores": scores.detach().cpu(), "identity": identity}, path)


def cached_scores(ctx, identity: dict, n: int, compute, *, what: str = "scores"):
    """``(scores, meta)``: the cached (n,) scores of ``identity``, or ``compute()`` saved under it.

    One process computes an entry while the others wait for it and load it (a claim-file lock);
    ``meta`` holds ``cache`` (hit, miss, or off without a cache root) and ``cache_key``.
    """
    import torch

    cache = ScoreCache(cache_root(ctx))
    key = cache.key(identity)
    cached = cache.load(key, n)
    if cached is not None:
        return cached, {"cache": "hit", "cache_key": key}
    from pd_plugins.locks import cache_fill

    with cache_fill(cache.path(key), what="score cache entry"):  # one process scores, the others wait and load
        cached = cache.load(key, n)
        if cached is not None:
            return cached, {"cache": "hit", "cache_key": key}
        scores = compute()
        if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (n,):
            raise DataError(f"{what}: score() must return one value per sample, a ({n},) tensor; got "
                            f"{tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__}")
        if not torch.isfinite(scores).all():
            raise DataError(f"{what} are not finite (the scorer diverged); lower the scorer lr")
        cache.save(key, scores, identity)
    return scores, {"cache": "miss" if cache.root is not None else "off", "cache_key": key}
