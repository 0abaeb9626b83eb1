"""MTT expert trajectories: train networks on a real set and cache their per-epoch parameters.

Each expert is a fresh backbone trained with SGD (MTT: lr 0.01, momentum 0, weight decay 0,
batch 256, independent DSA); its flat fp32 parameter vector is stored at init and after
every epoch, one atomic file per expert. The cache directory is keyed by the data
fingerprint (the pruned set, with its indices), architecture and options, optimiser,
augmentation and seed, so a repeated run reuses the experts and an interrupted run resumes
at the first missing expert. ``pd-run experts`` and the ``mtt`` distiller share this code.
"""
from __future__ import annotations

import warnings
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch

from pd_plugins.pipeline.context import RunContext
from pd_plugins.errors import DataError, OptionsError
from pd_plugins.training.device import device_key
from pd_plugins.training.evaluate import TrainRecipe
from pd_plugins.types import ImageDataset, sha256_json


ExpertRecipe = TrainRecipe  # how experts are trained (part of the cache key)


def flat_params(net: torch.nn.Module) -> torch.Tensor:
    """All trainable parameters of ``net`` as one detached fp32 vector."""
    return torch.cat([p.detach().reshape(-1).float().cpu() for p in net.parameters()])


def expert_key(data: ImageDataset, ctx: RunContext, recipe: ExpertRecipe, zca=None) -> dict:
    """Everything an expert trajectory depends on (``zca``: the transform ``data`` was whitened with; the
    device type, so a CPU run never reuses trajectories a GPU trained: docs/gpu.md)."""
    return {
        **({"zca": zca.identity()} if zca is not None else {}),
        "data": data.fingerprint(), "size": len(data), "model": ctx.model, "model_options": ctx.model_options,
        "channels": data.channels, "num_classes": data.num_classes, "im_size": list(data.im_size),
        "optimiser": {"name": "sgd", "lr": recipe.lr, "momentum": recipe.momentum,
                      "weight_decay": recipe.weight_decay, "batch": recipe.batch, "epochs": recipe.epochs},
        "augmentation": {"name": ctx.augmentation, "options": ctx.augmentation_options} if recipe.augment else None,
        "precision": ctx.precision, "seed": ctx.seed, **device_key(ctx.device),
    }


def expert_context(ctx: RunContext, seed: Optional[int]) -> RunContext:
    """``ctx`` with the seed the experts are trained with: ``seed``, or the run's own when None. A fixed seed
    makes every distillation seed share one cached expert buffer (MTT's ``buffer.py`` trains it once)."""
    return ctx if seed is None else replace(ctx, seed=int(seed))


def expert_dir(data: ImageDataset, ctx: RunContext, recipe: ExpertRecipe, zca=None) -> Path:
    if ctx.cache_dir is None:
        raise OptionsError("expert trajectories need a cache directory (RunContext.cache_dir / PD_CACHE_DIR)")
    return Path(ctx.cache_dir) / "experts" / sha256_json(expert_key(data, ctx, recipe, zca))[:24]


def expert_path(directory: Path, i: int) -> Path:
    return directory / f"expert_{i:04d}.pt"


def train_expert(data: ImageDataset, ctx: RunContext, recipe: ExpertRecipe, i: int) -> torch.Tensor:
    """Train expert ``i``; returns its (epochs + 1, P) trajectory of flat parameters."""
    with ctx.fork_rng("expert-net", i):
        net = ctx.make_model(data.channels, data.num_classes, data.im_size)
    aug = ctx.make_augmenter(data) if recipe.augment else None
    g = ctx.generator("expert-train", i)
    trajectory = [flat_params(net)]
    for ep in range(recipe.epochs):
        # momentum 0 in the MTT recipe, so a fresh optimiser per epoch is the same as one for all epochs
        recipe.train(net, data, ctx, g, augmenter=aug, epochs=1, desc=f"expert {i} epoch {ep + 1}")
        trajectory.append(flat_params(net))
    return torch.stack(trajectory)


def _expert_task(ctx: RunContext, data: ImageDataset, recipe: ExpertRecipe, i: int) -> torch.Tensor:
    """One expert as an executor task (the context comes first)."""
    return train_expert(data, ctx, recipe, i)


def _expert_ready(path: Path, i: int, warn: bool = True) -> bool:
    if not path.exists():
        return False
    if zipfile.is_zipfile(path):
        return True
    # a truncated or foreign file (torch.save writes a zip archive): retrain, never load it
    if warn:
        warnings.warn(f"ignoring corrupt expert file {path}; retraining expert {i}", RuntimeWarning, stacklevel=3)
    return False


def ensure_experts(data: ImageDataset, ctx: RunContext, recipe: ExpertRecipe, n: int, zca=None) -> tuple[Path, int]:
    """Make sure experts ``0..n-1`` exist in the cache; returns the directory and how many were trained.

    ``zca`` is the :class:`pd_plugins.data.zca.ZCA` that ``data`` was whitened with (``ZCA.apply``); it is
    part of the cache key, so experts of different ZCA settings never mix. Missing experts are tasks on
    ``ctx.executor`` (each seeded by its index). Each expert is claimed with a lock file while it trains,
    so processes sharing the cache never train one twice: experts another process is training are
    waited for, and trained here only if it gave up on them. Inline, the claim is taken one expert at a
    time, so two processes that need the same buffer train half of it each.
    """
    from pd_plugins.executor import INLINE, run_tasks
    from pd_plugins.io import atomic_torch_save, atomic_write_json
    from pd_plugins.locks import FileLock

    if recipe.momentum != 0.0 and recipe.epochs > 1:
        raise OptionsError("expert training resumes per epoch with a fresh optimiser; momentum must be 0 (MTT recipe)")
    if len(data) == 0:
        raise DataError("cannot train experts on an empty set")
    # a fixed stage name: the CLI command and the distiller produce the same experts
    ectx = replace(ctx, stage="experts")
    directory = expert_dir(data, ectx, recipe, zca)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / "key.json", expert_key(data, ectx, recipe, zca))

    def claim(i: int) -> FileLock:
        path = expert_path(directory, i)
        return FileLock(path.with_name(path.name + ".lock"), what=f"expert {i} of {directory}")

    def store(i: int, traj: torch.Tensor) -> None:
        atomic_torch_save({"trajectory": traj, "expert": i, "recipe": recipe.__dict__}, expert_path(directory, i))

    missing = [i for i in range(n) if not _expert_ready(expert_path(directory, i), i)]
    # a parallel executor gets every unclaimed expert in one map; trained inline, experts are claimed one at a
    # time, so processes sharing the cache (sweep workers) split the buffer instead of one waiting on the other
    executor = ctx.executor or INLINE
    chunk = len(missing) if executor.kind != INLINE.kind else 1
    held: dict[int, FileLock] = {}

    def trained_here():
        for start in range(0, len(missing), max(chunk, 1)):
            for i in missing[start:start + chunk]:
                lock = claim(i)
                if lock.try_acquire():
                    held[i] = lock
            # another process may have finished one between the first look and the claim
            todo = [i for i in missing[start:start + chunk] if i in held
                    and not _expert_ready(expert_path(directory, i), i, warn=False)]
            yield from run_tasks(ectx, _expert_task, [(i, (i,)) for i in todo], shared=(data, recipe))

    trained = 0
    try:
        for i, traj in ctx.progress(trained_here(), total=len(missing), desc="experts"):
            store(i, traj)
            held.pop(i).release()
            trained += 1
        for i in missing:  # experts other processes claimed: wait for them, train what they left undone
            if i in held or _expert_ready(expert_path(directory, i), i, warn=False):
                continue
            with claim(i):
                if not _expert_ready(expert_path(directory, i), i):
                    store(i, train_expert(data, ectx, recipe, i))
                    trained += 1
    finally:
        for lock in held.values():
            lock.release()
    return directory, trained


def load_trajectory(directory: Path, i: int) -> torch.Tensor:
    from pd_plugins.io import safe_torch_load

    path = expert_path(directory, i)
    entry = safe_torch_load(path, what=f"expert {i}")
    traj = entry.get("trajectory") if isinstance(entry, dict) else None
    if not isinstance(traj, torch.Tensor) or traj.dim() != 2 or traj.shape[0] < 2:
        raise DataError(f"expert {i} file {path} holds no (epochs + 1, P) trajectory; delete it to retrain")
    return traj
