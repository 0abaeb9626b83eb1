"""The host runner: resolve a config, then data -> prune -> distill -> evaluate.

:func:`~pd_plugins.pipeline.resolve.resolve_run` checks the config before any work;
:class:`~pd_plugins.pipeline.run_dir.RunDirectory` owns the folder, its manifest and resume rules;
:mod:`~pd_plugins.pipeline.stages` fingerprints, computes, saves and loads each stage. A killed run
resumes at the first unfinished stage; a finished one is never recomputed or overwritten without
``overwrite=True``.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Optional

from pd_plugins.config import RunConfig
from pd_plugins.errors import DataError, PdPluginsError
from pd_plugins.pipeline.context import RunContext
from pd_plugins.pipeline.resolve import MODES, resolve_device, resolve_run  # noqa: F401  (re-exported)
from pd_plugins.pipeline.run_dir import (  # noqa: F401  (ARTIFACTS, _logged_at_or_after, load_run_config: re-exported)
    ARTIFACTS, RunDirectory, _logged_at_or_after, default_out, load_run_config, package_versions)
from pd_plugins.pipeline.stages import STAGES, build_stages, call_strategy
from pd_plugins.pipeline.summary import summarise
from pd_plugins.training import allocator


class Run:
    """One run: its resolved settings (``plan``, ``resolved``), strategies, data, directory and stages."""

    memory_check: Optional[dict] = None  # the pre-run memory check's record (:meth:`check_memory`)

    def __init__(self, cfg: RunConfig, *, overwrite: bool = False, host=None, quiet: bool = False, executor=None,
                 lock_wait: float = 0.0, announce=None):
        """``executor`` runs the stages' independent tasks (default: sequential); ``lock_wait``: seconds to
        wait for another process that holds the run directory (0: refuse at once); ``announce(line)``
        is told the run's mode (``mode init (el2n-window's paper mode)``) once its inputs are checked,
        before distillation starts (a finished one loads unannounced): bad input still fails in one line."""
        from pd_plugins.plugins import get_host

        self.host = host or get_host()
        self.regs = self.host.registries()
        self.overwrite, self.quiet, self.executor, self.lock_wait = overwrite, quiet, executor, lock_wait
        self.announce = announce
        self.plan = resolve_run(cfg, self.host)
        # the stages, config.json and fingerprints see the mode the run uses (``auto`` resolved)
        self.cfg = cfg if cfg.mode == self.plan.mode else dataclasses.replace(cfg, mode=self.plan.mode)
        if self.plan.notes and not quiet:
            print(*self.plan.notes, sep="\n")
        self.resolved = self.plan.to_json(cfg.subset)
        self.device = self.plan.device
        self.pruner, self.distiller, self.evaluator = self.plan.strategies()
        self.dir = RunDirectory(cfg.out or default_out(cfg), overwrite=overwrite, lock_wait=lock_wait)
        self.out = self.dir.path
        self.stages = build_stages(self)
        self.prune_stage, self.distill_stage, self.eval_stage = self.stages.values()
        self._data = None

    def config_json(self) -> dict:
        return {**self.cfg.to_dict(), "out": str(self.out), "resolved": self.resolved}

    # -- what the stages share ------------------------------------------------------------
    def data(self):
        """The dataset's splits (loaded once)."""
        if self._data is None:
            entry = self.regs["dataset"].get(self.cfg.dataset)
            try:
                self._data = entry.load()(self.cfg.data_root, **self.resolved["dataset_options"])
            except PdPluginsError:
                raise
            except FileNotFoundError as exc:
                raise DataError(f"dataset {entry.name!r}: {exc}") from exc
        return self._data

    def context(self, stage: str) -> RunContext:
        """The :class:`RunContext` a strategy gets in ``stage``; its logs go to the run's ``log.jsonl``."""
        cfg = self.cfg

        def on_log(step, metrics):
            self.dir.append_log(stage, step, metrics)
            self.host.pm.hook.on_log(step=step, metrics=metrics, context=ctx)

        ctx = RunContext(
            seed=cfg.seed, device=self.device, progress_enabled=cfg.progress, work_dir=self.out,
            cache_dir=Path(os.environ.get("PD_CACHE_DIR") or (self.out.parent / ".pd-cache")),
            model=cfg.model, model_options=self.resolved["model_options"], augmentation=cfg.augmentation,
            augmentation_options=self.resolved["augmentation_options"], precision=self.resolved["precision"],
            compile=cfg.compile, checkpoint_every=cfg.checkpoint_every, on_log=on_log,
            on_rewind=lambda step: self.dir.rewind_log(stage, step), stage=stage, registries=self.regs,
            executor=self.executor,
        )
        return ctx

    def _call(self, kind: str, name: str, fn, *args, **kwargs):
        """Call a strategy; unexpected exceptions become a one-line StrategyError."""
        return call_strategy(self.regs, kind, name, fn, *args, **kwargs)

    # -- the stages (by name, for experiments and commands) ----------------------------------
    def stage_fingerprint(self, stage: str, data_fp: str) -> str:
        return self.stages[stage].fingerprint(data_fp)

    def run_prune(self, data_fp: str):
        """The PruneResult (positions into the train split), computed if needed."""
        return self.prune_stage.get(data_fp)

    def run_distill(self, data_fp: str, pruned):
        return self.distill_stage.get(data_fp, pruned)

    def run_eval(self, data_fp: str, pruned, distilled) -> dict:
        return self.eval_stage.get(data_fp, pruned, distilled)

    def init_pool(self, train, pruned):
        return self.distill_stage.init_pool(train, pruned)

    def eval_inputs(self, pruned, distilled):
        return self.eval_stage.inputs(pruned, distilled)

    # -- the run directory -----------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.dir.manifest_path

    def manifest(self) -> dict:
        return self.dir.manifest()

    def stage_done(self, stage: str, fingerprint: str) -> bool:
        return self.dir.stage_done(stage, fingerprint)

    def _mark_done(self, stage: str, fingerprint: str, extra=None) -> None:
        self.dir.mark_done(stage, fingerprint, extra)

    def lock(self):
        """Hold the claim on the run directory: one process works in it at a time."""
        return self.dir.lock()

    def prepare_dir(self, stages: tuple[str, ...]) -> None:
        """Create the run directory, or check that an existing one may be resumed."""
        from pd_plugins.training import device

        memory = {"memory_check": self.memory_check} if self.memory_check is not None else {}
        self.dir.prepare(stages, self.config_json(),
                         {"versions": package_versions(), "malloc": allocator.current(),
                          "device": {**device.describe(self.device), **device.configure(self.device)},
                          "plugins": self.host.plugin_list(include_builtin=True), **memory})

    def check_memory(self, stages: tuple[str, ...], data_fp: str, *, force: bool = False) -> dict:
        """Refuse the run (one OptionsError line) when the estimated peak memory of the unfinished ``stages``
        exceeds the device's free memory, unless ``force``; the estimate is recorded in the manifest."""
        from pd_plugins.planning.budget import check_run

        todo = tuple(s for s in stages if not self.stages[s].done(data_fp))
        self.memory_check = check_run(self, todo, force=force)
        return self.memory_check

    # -- whole run ---------------------------------------------------------------------------
    def execute(self, stages: tuple[str, ...] = STAGES, *, force: bool = False) -> dict:
        """Run the requested stages (skipping finished ones) and return a summary dict; ``force``: run even
        when the estimated peak memory exceeds the free memory (:meth:`check_memory`).

        The caller's global RNG is left as it was: the run works inside ``fork_rng`` seeded
        from the run seed, and strategies draw from ``ctx.generator``/``ctx.fork_rng`` keys.
        """
        import torch

        from pd_plugins.training import device

        allocator.keep_freed_memory()  # before the first large tensor: see pd_plugins.training.allocator
        device.configure(self.device)  # before the first CUDA work: deterministic kernels (docs/gpu.md)
        devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with self.lock(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.cfg.seed)
            return self._execute(stages, force)

    def _execute(self, stages: tuple[str, ...], force: bool = False) -> dict:
        stages = tuple(s for s in stages if not (s == "distill" and self.distiller is None)
                       and not (s == "eval" and self.evaluator is None))
        t0, seconds = time.perf_counter(), {}

        def timed(stage, *inputs):
            t = time.perf_counter()
            value = stage.get(data_fp, *inputs)
            seconds[stage.name] = round(time.perf_counter() - t, 2)
            return value

        splits = self._check_inputs(stages)  # data: before the run directory exists, bad inputs leave nothing
        data_fp = splits.train.fingerprint()
        self.check_memory(stages, data_fp, force=force)  # before the run directory exists, as bad inputs
        fresh, existed_empty = self.dir.is_fresh()
        self.prepare_dir(stages)
        pruned = distilled = evaluated = None
        distilling = "distill" in stages and not self.distill_stage.done(data_fp)
        try:
            ctx = self.context("run")
            self.host.pm.hook.on_run_start(config=self.config_json(), context=ctx)
            self.host.pm.hook.on_stage_end(stage="data", result=splits, context=ctx)
            if any(s in STAGES for s in stages):  # every stage needs the pruned set
                pruned = timed(self.prune_stage)
            if distilling:
                self.distill_stage.check(splits.train, pruned)
        except Exception:
            if fresh:  # failed before any distillation work: leave no half-made run directory
                self.dir.discard(keep_dir=existed_empty)
            raise
        if distilling and self.announce is not None:  # a finished distillation is loaded, not announced
            self.announce(f"mode {self.cfg.mode} ({self.plan.mode_source})")
        if "distill" in stages:
            distilled = timed(self.distill_stage, pruned)
        if "eval" in stages:
            evaluated = timed(self.eval_stage, pruned, distilled)
        summary = self.summary(splits, pruned, distilled, evaluated)
        summary["seconds"] = {**seconds, "total": round(time.perf_counter() - t0, 2)}
        return summary

    def _check_inputs(self, stages: tuple[str, ...]):
        """Load the data and check the run's inputs before the run directory exists: bad ones leave nothing."""
        splits = self.data()
        if self.cfg.subset:
            from pd_plugins.data.subset import read_subset

            read_subset(self.cfg.subset, splits.train)
        if "distill" in stages:  # e.g. a generator's prior folder
            self.distiller.check_inputs()
            self.distiller.check_data(splits.train)
        return splits

    def summary(self, splits, pruned, distilled, evaluated) -> dict:
        return summarise(self, splits, pruned, distilled, evaluated)


def run(config: RunConfig, *, overwrite: bool = False, stages: tuple[str, ...] = STAGES, host=None,
        force: bool = False) -> dict:
    """Run a pipeline from the Python API; returns the summary dict (see :class:`Run`); ``force``: run even
    when the estimated peak memory exceeds the free memory."""
    return Run(config, overwrite=overwrite, host=host).execute(stages, force=force)
