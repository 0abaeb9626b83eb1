"""Config resolution: a :class:`RunConfig` and a plugin host in, a :class:`ResolvedRun` out.

Every name, option and combination is checked here, before any work or any file is written;
the only inputs read are the ``--subset`` file (its hash) and the device's availability.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pd_plugins.config import RunConfig
from pd_plugins.errors import DataError, OptionsError, RegistryError
from pd_plugins.strategies import PAPER_MODES

#: pipeline modes: the pruned set is the distiller's pool, or only chooses its initial images --
#: exactly ipc per class at the selection's edge (Sundar et al.), or ipc at random from it
MODES = PAPER_MODES
#: what ``--mode`` accepts: a mode, or ``auto`` (the default): the pruner's paper mode
MODE_CHOICES = ("auto",) + MODES


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when available, else cpu; a device this machine does not have (an unknown name,
    CUDA without CUDA, an index beyond its GPUs) is a one-line DeviceError (exit 2)."""
    import torch

    from pd_plugins.training.device import check_device

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return check_device(device)


def subset_hash(cfg: RunConfig) -> Optional[str]:
    """sha256 of the ``--subset`` file (None without one)."""
    if not cfg.subset:
        return None
    from pd_plugins.io import file_sha256

    if not Path(cfg.subset).is_file():
        raise DataError(f"subset file not found: {cfg.subset}")
    return file_sha256(cfg.subset)


@dataclass(frozen=True)
class ResolvedRun:
    """A run's settings after defaults, budget and contracts are applied.

    The strategy classes come with their typed options (``None`` for a stage set to ``none``);
    :meth:`to_json` is the ``resolved`` block recorded in ``config.json`` and fingerprinted.
    """

    budget: str
    keep: float
    device: str
    precision: str
    dataset_options: dict
    model_options: dict
    augmentation_options: dict
    pruner_cls: Optional[type] = None
    pruner_options: Any = None
    distiller_cls: Optional[type] = None
    distiller_options: Any = None
    evaluator_cls: Optional[type] = None
    evaluator_options: Any = None
    subset_sha256: Optional[str] = None
    init_select: Optional[str] = None  # "edge" (mode init) or "random" (init-random); None in pool mode
    mode: str = "pool"  # the pipeline mode the run uses (``auto`` resolved)
    mode_source: str = "set explicitly"  # why: given with --mode, or the pruner's paper mode and any fallback
    notes: tuple[str, ...] = field(default=(), compare=False)  # e.g. why bf16 fell back to fp32

    def strategies(self) -> tuple:
        """Fresh ``(pruner, distiller, evaluator)`` instances (None for a stage set to ``none``)."""
        return tuple(cls(opts) if cls is not None else None for cls, opts in (
            (self.pruner_cls, self.pruner_options), (self.distiller_cls, self.distiller_options),
            (self.evaluator_cls, self.evaluator_options)))

    def to_json(self, subset_file: Optional[str] = None) -> dict:
        from pd_plugins.options import as_dict

        def opts(value):
            return as_dict(value) if value is not None else None

        out = {"budget": self.budget, "keep": self.keep, "device": self.device,
               "dataset_options": self.dataset_options, "model_options": self.model_options,
               "augmentation_options": self.augmentation_options, "pruner_options": opts(self.pruner_options),
               "distiller_options": opts(self.distiller_options), "evaluator_options": opts(self.evaluator_options)}
        if self.subset_sha256 is not None:
            out["subset"] = {"file": str(subset_file), "sha256": self.subset_sha256}
        out["precision"] = self.precision
        out["mode_source"] = self.mode_source  # provenance only: not compared on resume (run_dir)
        if self.init_select is not None:  # recorded: `init` once meant what `init-random` does now
            out["init_select"] = self.init_select
        return out


def resolve_mode(requested: str, pruner_cls, distiller_cls, distiller_opts) -> tuple[str, str]:
    """``(mode, source)``: an explicit mode wins; ``auto`` takes the pruner's declared
    ``paper_mode``, falling back to ``pool`` (and saying why) where no distiller can start from the
    pruned set -- no pruner, no distiller, a distiller starting from noise, or one that selects
    real images itself."""
    if requested != "auto":
        return requested, "set explicitly"
    if pruner_cls is None:
        return "pool", "no pruner"
    paper = pruner_cls.paper_mode
    if paper not in MODES:
        raise RegistryError(f"pruner {pruner_cls.name!r} declares paper_mode {paper!r}; use one of {', '.join(MODES)}")
    source = f"{pruner_cls.name}'s paper mode"
    if paper == "pool":
        return "pool", source
    if distiller_cls is None:
        return "pool", f"{source} is {paper}, but there is no distiller"
    if not distiller_cls.starts_from_chosen_set(distiller_opts):
        why = ("selects real images itself" if distiller_cls.uses_real_init(distiller_opts)
               else "does not start from real images with these options")
        return "pool", f"{source} is {paper}, but {distiller_cls.name} {why}"
    return paper, source


def _check_scalars(cfg: RunConfig) -> None:
    if cfg.mode not in MODE_CHOICES:
        raise OptionsError(f"unknown mode {cfg.mode!r}; use 'auto' (the pruner's paper mode), 'pool' (pruned set "
                           "replaces the real pool), 'init' (ipc per class at the selection's edge seed the images) "
                           "or 'init-random'")
    if cfg.ipc < 1:
        raise OptionsError(f"ipc must be >= 1, got {cfg.ipc}")
    if cfg.checkpoint_every < 0:
        raise OptionsError(f"--checkpoint-every must be >= 0 (0: no checkpoints), got {cfg.checkpoint_every}")
    if cfg.precision not in ("fp32", "bf16"):
        raise OptionsError(f"unknown precision {cfg.precision!r}; use fp32 or bf16")


def _resolve_keep(cfg: RunConfig, pruner_cls, pruner_opts, recommended: Optional[float]) -> float:
    """The keep ratio: --keep, else the pruner's window, else the distiller's recommendation, else 0.5."""
    if cfg.subset and cfg.pruner != "none":
        raise OptionsError("--subset replaces the pruner; do not give both")
    if cfg.subset and cfg.keep is not None and cfg.keep != 1.0:
        raise OptionsError("--subset fixes the kept samples; do not give --keep")
    if pruner_cls is None:
        if cfg.pruner_options:
            raise OptionsError("pruner options given but --pruner is none")
        if cfg.keep is not None and cfg.keep != 1.0 and not cfg.subset:
            raise OptionsError("--keep needs a pruner (got --pruner none)")
        return 1.0
    keep = cfg.keep if cfg.keep is not None else (recommended if recommended is not None else 0.5)
    implied = pruner_cls.implied_keep(pruner_opts)
    if implied is not None:
        if cfg.keep is not None and abs(cfg.keep - implied) > 1e-9:
            raise OptionsError(
                f"--keep {cfg.keep} disagrees with the pruner's window (keeps {implied:g}); give one of them"
            )
        keep = implied
    if not (0.0 < float(keep) <= 1.0):
        raise OptionsError(f"keep ratio must be in (0, 1], got {keep}")
    return float(keep)


def resolve_run(cfg: RunConfig, host) -> ResolvedRun:
    """Check every name and option of ``cfg`` against ``host``'s registries; no work, no files written."""
    from pd_plugins.options import as_dict, coerce
    from pd_plugins.strategies import BUDGETS
    from pd_plugins.training.accel import resolve_precision

    regs = host.registries()
    ds_entry = regs["dataset"].get(cfg.dataset)
    budget = ds_entry.meta.get("default_budget", "paper") if cfg.budget == "auto" else cfg.budget
    if budget not in BUDGETS:
        raise OptionsError(f"unknown budget {cfg.budget!r}; use auto, {', '.join(BUDGETS)}")
    _check_scalars(cfg)

    def entry_options(kind: str, name: str, values: dict) -> dict:
        entry = regs[kind].get(name)
        return as_dict(coerce(entry.options_class(), dict(values), what=f"{kind} {entry.name!r}"))

    ds_opts = entry_options("dataset", cfg.dataset, cfg.dataset_options)
    model_opts = entry_options("model", cfg.model, cfg.model_options)
    aug_opts = entry_options("augmentation", cfg.augmentation, cfg.augmentation_options)
    aug_opts.pop("allow_flip", None)

    distiller_cls = distiller_opts = None
    if cfg.distiller != "none":
        distiller_cls = regs["distiller"].load(cfg.distiller)
        distiller_opts = distiller_cls.resolve_options(cfg.distiller_options, budget)
    elif cfg.distiller_options:
        raise OptionsError("distiller options given but --distiller is none")
    pruner_cls = pruner_opts = None
    if cfg.pruner != "none" and not cfg.subset:  # both: refused in _resolve_keep
        pruner_cls = regs["pruner"].load(cfg.pruner)
        pruner_opts = pruner_cls.resolve_options(cfg.pruner_options, budget)
    recommended = distiller_cls.recommended_keep_for(distiller_opts) if distiller_cls is not None else None
    keep = _resolve_keep(cfg, pruner_cls, pruner_opts, recommended)
    if cfg.mode not in ("pool", "auto") and distiller_cls is None:
        raise OptionsError(f"mode {cfg.mode!r} needs a distiller")
    mode, mode_source = resolve_mode(cfg.mode, pruner_cls, distiller_cls, distiller_opts)

    evaluator_cls = eval_opts = None
    if cfg.evaluator != "none":
        evaluator_cls = regs["evaluator"].load(cfg.evaluator)
        eval_values = dict(cfg.evaluator_options)
        if cfg.eval_repeats is not None:
            if cfg.eval_repeats < 1:
                raise OptionsError(f"--eval-repeats must be >= 1, got {cfg.eval_repeats}")
            eval_values["repeats"] = cfg.eval_repeats
        eval_opts = evaluator_cls.resolve_options(eval_values, budget)

    device = resolve_device(cfg.device)
    precision, note = resolve_precision(cfg.precision, device)
    return ResolvedRun(
        budget=budget, keep=keep, device=device, precision=precision, dataset_options=ds_opts,
        model_options=model_opts, augmentation_options=aug_opts, pruner_cls=pruner_cls, pruner_options=pruner_opts,
        distiller_cls=distiller_cls, distiller_options=distiller_opts, evaluator_cls=evaluator_cls,
        evaluator_options=eval_opts, subset_sha256=subset_hash(cfg),
        init_select=None if mode == "pool" else ("edge" if mode == "init" else "random"),
        mode=mode, mode_source=mode_source, notes=(note,) if note else (),
    )
