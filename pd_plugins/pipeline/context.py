"""RunContext: everything a strategy needs from the host, passed explicitly.

Strategies never read global state: device, seeds, progress bars, logging, checkpoints,
models and augmentations all come through the context. All randomness derives from
``seed`` via :meth:`RunContext.generator` (a local ``torch.Generator`` per named purpose)
or :meth:`RunContext.fork_rng` (for library code that only draws from the global RNG,
such as ``nn.Module`` initialisation).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional


#: ``kind -> registry`` of the process-wide plugin host, for contexts built without ``registries``.
#: The ``pd_plugins`` package installs it on import (:func:`use_process_registry`), so this module,
#: which strategies and hook specifications refer to, does not depend on the plugin host.
_process_registry: Optional[Callable[[str], Any]] = None


def use_process_registry(lookup: Callable[[str], Any]) -> None:
    """Where contexts built without ``registries`` find a registry: ``lookup(kind)``."""
    global _process_registry
    _process_registry = lookup


def derive_seed(seed: int, *key: Any) -> int:
    """A 63-bit seed derived from ``seed`` and a purpose key, stable across processes."""
    h = hashlib.sha256(repr((int(seed),) + tuple(str(k) for k in key)).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


@dataclass
class RunContext:
    """Host services for one stage of one run."""

    seed: int = 0
    device: str = "cpu"
    progress_enabled: bool = False
    work_dir: Optional[Path] = None
    cache_dir: Optional[Path] = None
    model: str = "convnet"
    model_options: dict = field(default_factory=dict)
    augmentation: str = "dsa"
    augmentation_options: dict = field(default_factory=dict)
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False  # networks in channels-last layout (a CUDA fast path, measured by gpu_check.py)
    checkpoint_every: int = 0
    on_log: Optional[Callable[[int, dict], None]] = None
    on_rewind: Optional[Callable[[int], None]] = None
    stage: str = ""
    # the run's host registries (``Run(cfg, host=h)``); None: the process-wide host's
    registries: Optional[dict] = field(default=None, repr=False, compare=False)
    executor: Any = None  # pd_plugins.executor.Executor for independent tasks (None: sequential)

    # -- randomness --------------------------------------------------------------
    def generator(self, *key: Any, device: Optional[str] = None):
        """A fresh ``torch.Generator`` seeded from the run seed and ``key``; on the CPU unless ``device``
        says otherwise, so a seed draws the same numbers on every device (docs/gpu.md)."""
        import torch

        g = torch.Generator(device=device or "cpu")
        g.manual_seed(derive_seed(self.seed, self.stage, *key))
        return g

    @contextlib.contextmanager
    def fork_rng(self, *key: Any):
        """Run a block with the global RNG seeded from ``key``, then restore it."""
        import torch

        devices = []
        if str(self.device).startswith("cuda") and torch.cuda.is_available():
            devices = [torch.device(self.device).index or 0]
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed(self.seed, self.stage, *key))
            yield

    # -- progress and logging ----------------------------------------------------
    def progress(self, iterable: Iterable, total: Optional[int] = None, desc: str = "", **kw):
        """Wrap ``iterable`` in a tqdm bar when progress is enabled."""
        if not self.progress_enabled:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, **kw)

    def log(self, step: int, **metrics: Any) -> None:
        """Record per-iteration scalars; the host persists them and fires ``on_log``."""
        if self.on_log is not None:
            self.on_log(step, {k: _scalar(v) for k, v in metrics.items()})

    def rewind_log(self, step: int) -> None:
        """Forget this stage's logged rows from ``step`` on (a resumed loop logs them again)."""
        if self.on_rewind is not None:
            self.on_rewind(int(step))

    # -- factories ----------------------------------------------------------------
    def registry(self, kind: str):
        """The registry of ``kind`` of the host this run was created with (no ``registries``: the
        process-wide host's)."""
        if self.registries is not None:
            return self.registries[kind]
        if _process_registry is None:  # pragma: no cover - ``import pd_plugins`` installs it first
            raise RuntimeError("RunContext has no registries and no process-wide host was installed")
        return _process_registry(kind)

    def make_model(self, channels: int, num_classes: int, im_size, name: Optional[str] = None, **options):
        """Build a backbone from the model registry (``name`` defaults to the run's model)."""
        factory = self.registry("model").load(name or self.model)
        net = factory(channels=channels, num_classes=num_classes, im_size=tuple(im_size),
                      **self.model_options_for(name, options))
        if self.channels_last:
            import torch

            return net.to(self.device, memory_format=torch.channels_last, non_blocking=True)
        return net.to(self.device, non_blocking=True)  # built on the host (same init on every device), copied over

    def model_options_for(self, name: Optional[str] = None, options: Optional[dict] = None) -> dict:
        """The options :meth:`make_model` builds ``name`` with: the run's own model keeps the run's
        options, also when named explicitly (cross-architecture eval, scorers); ``options`` win."""
        opts = dict(self.model_options if name in (None, self.model) else {})
        opts.update(options or {})
        return opts

    def make_augmenter(self, data, name: Optional[str] = None, **options):
        """Build the run's augmentation for ``data`` (e.g. DSA, with flip dropped for digits)."""
        aug_name = name or self.augmentation
        opts = dict(self.augmentation_options if name is None else {})
        opts.update(options)
        factory = self.registry("augmentation").load(aug_name)
        return factory(allow_flip=data.allow_flip, **opts)

    # -- checkpoints ----------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Optional[Path]:
        if self.work_dir is None:
            return None
        return Path(self.work_dir) / "checkpoints" / f"{self.stage or 'stage'}.pt"

    def save_checkpoint(self, state: dict) -> None:
        """Atomically write a resumable state (tensors and plain Python values only)."""
        path = self.checkpoint_path
        if path is None:
            return
        from pd_plugins.io import atomic_torch_save

        atomic_torch_save(state, path)

    def load_checkpoint(self) -> Optional[dict]:
        """The last checkpoint of this stage, or None."""
        path = self.checkpoint_path
        if path is None or not path.exists():
            return None
        from pd_plugins.io import safe_torch_load

        return safe_torch_load(path, what=f"{self.stage} checkpoint")

    def clear_checkpoint(self) -> None:
        path = self.checkpoint_path
        if path is not None and path.exists():
            os.remove(path)

    def should_checkpoint(self, it: int) -> bool:
        return self.checkpoint_every > 0 and self.work_dir is not None and (it + 1) % self.checkpoint_every == 0

    # -- precision ------------------------------------------------------------------
    def autocast(self):
        """Autocast context for the run's precision (a no-op for fp32)."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        import torch

        dev_type = "cuda" if str(self.device).startswith("cuda") else "cpu"
        return torch.autocast(dev_type, dtype=torch.bfloat16)


def _scalar(v: Any) -> Any:
    try:
        import torch

        if isinstance(v, torch.Tensor):
            return v.detach().float().item() if v.numel() == 1 else v.detach().cpu().tolist()
    except ImportError:  # pragma: no cover
        pass
    return v
