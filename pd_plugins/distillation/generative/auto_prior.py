"""``ld3m weights=auto``: the small ldm prior of ``pd-run prior train --kind ldm``, trained on the
run's pool once and cached by its inputs.

The cache entry is keyed by the pool's fingerprint (the pruned set, with its indices), the
training settings, the seed and the precision, like expert trajectories. One process fills
an entry at a time (a claim file beside it); the prior is written to a temporary folder and
renamed into place, so a reader never sees half a prior. The training RNG streams are those
of ``pd-run prior train --kind ldm --seed SEED`` on the same images.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

from pd_plugins.errors import OptionsError
from pd_plugins.types import ImageDataset, sha256_json


def prior_key(data: ImageDataset, ctx, settings: dict) -> dict:
    """Everything the trained prior depends on (the device type too: docs/gpu.md)."""
    from pd_plugins.training.device import device_key

    return {"kind": "ldm", "data": data.fingerprint(), "size": len(data), "channels": data.channels,
            "im_size": list(data.im_size), "num_classes": data.num_classes, "train": dict(sorted(settings.items())),
            "seed": ctx.seed, "precision": ctx.precision, **device_key(ctx.device)}


def prior_dir(data: ImageDataset, ctx, settings: dict) -> Path:
    if ctx.cache_dir is None:
        raise OptionsError("ld3m weights=auto caches the prior it trains and needs a cache directory "
                           "(RunContext.cache_dir / PD_CACHE_DIR)")
    return Path(ctx.cache_dir) / "priors" / f"ldm-{sha256_json(prior_key(data, ctx, settings))[:24]}"


def _ready(path: Path) -> bool:
    return (path / "prior.json").is_file()


def ensure_auto_prior(data: ImageDataset, ctx, settings: dict, *, who: str = "ld3m") -> tuple[Path, bool]:
    """The cached prior for ``data`` (trained now when missing); returns (folder, trained_now)."""
    from pd_plugins.locks import cache_fill

    path = prior_dir(data, ctx, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not _ready(path):
        with cache_fill(path, "ldm prior"):
            if not _ready(path):  # else another process trained it while we waited
                _train_into(path, data, ctx, settings, who)
                return path, True
    print(f"{who} weights=auto: reusing the ldm prior cached at {path}", file=sys.stderr)
    return path, False


def _train_into(path: Path, data: ImageDataset, ctx, settings: dict, who: str) -> None:
    """Train the prior into a temporary folder beside ``path``, then rename it into place."""
    from pd_plugins.io import atomic_write_json
    from pd_plugins.distillation.generative.ldm_train import train_ldm

    print(f"{who} weights=auto: training the small ldm prior on the pool ({len(data)} images, "
          f"{settings}) once; cached at {path}", file=sys.stderr)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    prior_ctx = dataclasses.replace(ctx, stage="prior-ldm", on_log=None, on_rewind=None)
    train_ldm(data, prior_ctx, tmp, **settings)
    atomic_write_json(tmp / "key.json", prior_key(data, ctx, settings))
    if path.exists():  # a folder without prior.json: never finished
        shutil.rmtree(path)
    os.replace(tmp, path)
