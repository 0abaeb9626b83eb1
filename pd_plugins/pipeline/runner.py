"""The host runner: resolve a config, then data -> prune -> distill -> eval.

Each stage writes one artifact atomically into the run directory and records it in
``manifest.json`` with a fingerprint of everything it depends on. A stage counts as done
only when its artifact exists *and* its manifest entry matches the current fingerprint,
so a killed run resumes at the first unfinished stage, and a finished one is never
recomputed or overwritten without ``overwrite=True``.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from pd_plugins.pipeline.context import RunContext
from pd_plugins.errors import DataError, OptionsError, StageExistsError, StrategyError, PdPluginsError, DivergenceError
from pd_plugins.io import atomic_torch_save, atomic_write_json, atomic_write_text, read_json, safe_torch_load
from pd_plugins.paths import expect_output_dir
from pd_plugins.types import sha256_json
from pd_plugins.config import RunConfig  # noqa: F401  (re-exported: pd_plugins.pipeline.runner.RunConfig)

STAGES = ("prune", "distill", "eval")
#: pipeline modes: the pruned set is the distiller's pool, or only chooses its initial images --
#: exactly ipc per class at the selection's edge (Sundar et al.), or ipc at random from it
MODES = ("pool", "init", "init-random")
ARTIFACTS = {"prune": "prune.pt", "distill": "distill.pt", "eval": "eval.json"}




def resolve_device(device: str) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise OptionsError(f"device {device!r} requested but CUDA is not available")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise OptionsError(f"unknown device {device!r}; use auto, cpu or cuda[:i]")
    return device


def _logged_at_or_after(line: str, stage: str, step: int) -> bool:
    """Is this log.jsonl line a row of ``stage`` at iteration ``step`` or later?"""
    try:
        row = json.loads(line)
    except ValueError:
        return True  # a torn last line from a killed process
    return row.get("stage") == stage and isinstance(row.get("step"), int) and row["step"] >= step


def default_out(cfg: RunConfig) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return str(Path("runs") / f"{cfg.dataset}-{cfg.pruner}-{cfg.distiller}-ipc{cfg.ipc}-s{cfg.seed}-{stamp}")


class Run:
    """One run directory and the stages that fill it."""

    def __init__(self, cfg: RunConfig, *, overwrite: bool = False, host=None, quiet: bool = False, executor=None,
                 lock_wait: float = 0.0):
        """``executor`` runs the stages' independent tasks (default: sequential); ``lock_wait``: seconds to
        wait for another process that holds the run directory (0: refuse at once)."""
        from pd_plugins.plugins import get_host

        self.host = host or get_host()
        self.regs = self.host.registries()
        self.cfg = cfg
        self.overwrite = overwrite
        self.quiet = quiet
        self.executor = executor
        self.lock_wait = lock_wait
        self._data = None
        self.resolved = self._resolve()
        self.out = Path(cfg.out or default_out(cfg))
        expect_output_dir(self.out, "output directory", writable=False)  # writability: prepare_dir's probe

    # -- resolution --------------------------------------------------------------
    def _resolve(self) -> dict:
        """Check every name and option before any work; returns the resolved settings."""
        cfg = self.cfg
        regs = self.regs
        ds_entry = regs["dataset"].get(cfg.dataset)
        budget = cfg.budget
        if budget == "auto":
            budget = ds_entry.meta.get("default_budget", "paper")
        if budget not in ("paper", "quick"):
            raise OptionsError(f"unknown budget {cfg.budget!r}; use auto, paper or quick")
        if cfg.mode not in MODES:
            raise OptionsError(f"unknown mode {cfg.mode!r}; use 'pool' (pruned set replaces the real pool), "
                               "'init' (ipc per class at the selection's edge seed the images) or 'init-random'")
        if cfg.ipc < 1:
            raise OptionsError(f"ipc must be >= 1, got {cfg.ipc}")
        if cfg.checkpoint_every < 0:
            raise OptionsError(f"--checkpoint-every must be >= 0 (0: no checkpoints), got {cfg.checkpoint_every}")
        if cfg.precision not in ("fp32", "bf16"):
            raise OptionsError(f"unknown precision {cfg.precision!r}; use fp32 or bf16")
        from pd_plugins.options import as_dict, coerce

        ds_opts = as_dict(coerce(ds_entry.options_class(), cfg.dataset_options, what=f"dataset {ds_entry.name!r}"))
        model_entry = regs["model"].get(cfg.model)
        model_opts = as_dict(coerce(model_entry.options_class(), cfg.model_options, what=f"model {model_entry.name!r}"))
        aug_entry = regs["augmentation"].get(cfg.augmentation)
        aug_cls = aug_entry.options_class()
        aug_values = {k: v for k, v in cfg.augmentation_options.items()}
        aug_opts = as_dict(coerce(aug_cls, aug_values, what=f"augmentation {aug_entry.name!r}"))
        aug_opts.pop("allow_flip", None)

        distiller_cls = None
        distiller_opts = None
        if cfg.distiller != "none":
            distiller_cls = regs["distiller"].load(cfg.distiller)
            distiller_opts = distiller_cls.resolve_options(cfg.distiller_options, budget)
        elif cfg.distiller_options:
            raise OptionsError("distiller options given but --distiller is none")

        keep = cfg.keep
        if keep is None:
            recommended = distiller_cls.recommended_keep_for(distiller_opts) if distiller_cls is not None else None
            keep = recommended if recommended is not None else 0.5
        pruner_cls = None
        pruner_opts = None
        if cfg.subset and cfg.pruner != "none":
            raise OptionsError("--subset replaces the pruner; do not give both")
        if cfg.subset and cfg.keep is not None and cfg.keep != 1.0:
            raise OptionsError("--subset fixes the kept samples; do not give --keep")
        if cfg.pruner != "none":
            pruner_cls = regs["pruner"].load(cfg.pruner)
            pruner_opts = pruner_cls.resolve_options(cfg.pruner_options, budget)
            implied = pruner_cls.implied_keep(pruner_opts)
            if implied is not None:
                if cfg.keep is not None and abs(cfg.keep - implied) > 1e-9:
                    raise OptionsError(
                        f"--keep {cfg.keep} disagrees with the pruner's window (keeps {implied:g}); give one of them"
                    )
                keep = implied
            if not (0.0 < float(keep) <= 1.0):
                raise OptionsError(f"keep ratio must be in (0, 1], got {keep}")
        else:
            if cfg.pruner_options:
                raise OptionsError("pruner options given but --pruner is none")
            if cfg.keep is not None and cfg.keep != 1.0 and not cfg.subset:
                raise OptionsError("--keep needs a pruner (got --pruner none)")
            keep = 1.0
        if cfg.mode != "pool" and distiller_cls is None:
            raise OptionsError(f"mode {cfg.mode!r} needs a distiller")

        evaluator_cls = None
        eval_opts = None
        if cfg.evaluator != "none":
            evaluator_cls = regs["evaluator"].load(cfg.evaluator)
            eval_values = dict(cfg.evaluator_options)
            if cfg.eval_repeats is not None:
                if cfg.eval_repeats < 1:
                    raise OptionsError(f"--eval-repeats must be >= 1, got {cfg.eval_repeats}")
                eval_values["repeats"] = cfg.eval_repeats
            eval_opts = evaluator_cls.resolve_options(eval_values, budget)

        self.pruner = pruner_cls(pruner_opts) if pruner_cls else None
        self.distiller = distiller_cls(distiller_opts) if distiller_cls else None
        self.evaluator = evaluator_cls(eval_opts) if evaluator_cls else None
        self.device = resolve_device(cfg.device)
        extra = {"subset": {"file": str(cfg.subset), "sha256": self._subset_hash()}} if cfg.subset else {}
        from pd_plugins.training.accel import resolve_precision

        precision, note = resolve_precision(cfg.precision, self.device)
        if note and not self.quiet:
            print(note)
        extra["precision"] = precision
        if cfg.mode != "pool":  # recorded: `init` once meant what `init-random` does now
            extra["init_select"] = "edge" if cfg.mode == "init" else "random"
        return {
            "budget": budget,
            "keep": float(keep),
            "device": self.device,
            "dataset_options": ds_opts,
            "model_options": model_opts,
            "augmentation_options": aug_opts,
            "pruner_options": as_dict(pruner_opts) if pruner_opts is not None else None,
            "distiller_options": as_dict(distiller_opts) if distiller_opts is not None else None,
            "evaluator_options": as_dict(eval_opts) if eval_opts is not None else None,
            **extra,
        }

    def config_json(self) -> dict:
        return {**self.cfg.to_dict(), "out": str(self.out), "resolved": self.resolved}

    # -- fingerprints -------------------------------------------------------------
    def _versions(self) -> dict:
        import torch
        import kornia

        from pd_plugins import __version__

        return {"pd_plugins": __version__, "torch": torch.__version__, "kornia": kornia.__version__,
                "python": platform.python_version()}

    def stage_fingerprint(self, stage: str, data_fp: str) -> str:
        cfg = self.cfg
        r = self.resolved
        prune_key = {"data": data_fp, "pruner": cfg.pruner, "keep": r["keep"], "options": r["pruner_options"],
                     "seed": cfg.seed, "subset": self._subset_hash()}
        from_context = self.pruner.context_identity(self.context("prune")) if self.pruner is not None else {}
        if from_context:  # e.g. the scorer's effective model options, inherited from the run's
            prune_key["context"] = from_context
        if stage == "prune":
            return sha256_json(prune_key)
        distill_key = {"prune": prune_key, "distiller": cfg.distiller, "ipc": cfg.ipc, "mode": cfg.mode,
                       "options": r["distiller_options"], "model": cfg.model, "model_options": r["model_options"],
                       "augmentation": cfg.augmentation, "aug": r["augmentation_options"], "seed": cfg.seed,
                       "precision": cfg.precision}
        if cfg.mode != "pool":
            distill_key["init_select"] = r["init_select"]
        if stage == "distill":
            return sha256_json(distill_key)
        eval_key = {"distill": distill_key, "evaluator": cfg.evaluator, "options": r["evaluator_options"]}
        revision = getattr(self.evaluator, "protocol_revision", 0)
        if revision:  # a changed protocol makes results of the old code stale
            eval_key["revision"] = revision
        return sha256_json(eval_key)

    def _subset_hash(self) -> Optional[str]:
        if not self.cfg.subset:
            return None
        from pd_plugins.io import file_sha256

        if not Path(self.cfg.subset).is_file():
            raise DataError(f"subset file not found: {self.cfg.subset}")
        return file_sha256(self.cfg.subset)

    # -- run directory ---------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.out / "manifest.json"

    def manifest(self) -> dict:
        if self.manifest_path.exists():
            return read_json(self.manifest_path, "manifest")
        return {}

    def stage_done(self, stage: str, fingerprint: str) -> bool:
        entry = self.manifest().get("stages", {}).get(stage)
        return bool(entry) and entry.get("fingerprint") == fingerprint and (self.out / ARTIFACTS[stage]).exists()

    def _mark_done(self, stage: str, fingerprint: str, extra: Optional[dict] = None) -> None:
        man = self.manifest()
        man.setdefault("stages", {})[stage] = {"fingerprint": fingerprint, "artifact": ARTIFACTS[stage],
                                               "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **(extra or {})}
        atomic_write_json(self.manifest_path, man)

    def prepare_dir(self, stages: tuple[str, ...]) -> None:
        """Create the run directory, or check that an existing one may be resumed."""
        cfg_path = self.out / "config.json"
        if self.out.exists() and any(self.out.iterdir()):
            if self.overwrite:
                shutil.rmtree(self.out)
            elif cfg_path.exists():
                old = read_json(cfg_path, "config")
                new = self.config_json()
                diff = sorted(k for k in set(old) | set(new) if k not in ("out", "progress") and old.get(k) != new.get(k))
                if diff:
                    raise StageExistsError(
                        f"run directory {self.out} holds a different run (differs in: {', '.join(diff)}); "
                        "use --overwrite or another --out"
                    )
                if all(self.manifest().get("stages", {}).get(s) for s in stages):
                    raise StageExistsError(f"run directory {self.out} is already finished; use --overwrite to redo it")
            elif not self.manifest().get("from"):  # "from": seeded with prune.pt by `pd-run distill --from`
                raise StageExistsError(f"output directory {self.out} is not empty and holds no run; use --overwrite or another --out")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / ".write-probe"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise DataError(f"cannot write to output directory {self.out}: {exc.strerror or exc}") from None
        atomic_write_json(self.out / "config.json", self.config_json())
        man = self.manifest()
        man.update({"versions": self._versions(), "plugins": self.host.plugin_list(include_builtin=True),
                    "created": man.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S")})
        man.setdefault("stages", {})
        atomic_write_json(self.manifest_path, man)

    def _discard_dir(self, keep_dir: bool) -> None:
        """Remove what this invocation put into the run directory (the directory too unless ``keep_dir``)."""
        if self.out.exists():
            shutil.rmtree(self.out)
            if keep_dir:
                self.out.mkdir()

    # -- stages -------------------------------------------------------------------
    def context(self, stage: str) -> RunContext:
        cfg = self.cfg

        def on_log(step, metrics):
            line = json.dumps({"stage": stage, "step": step, **metrics}, default=str)
            with open(self.out / "log.jsonl", "a") as fh:
                fh.write(line + "\n")
            self.host.pm.hook.on_log(step=step, metrics=metrics, context=ctx)

        def on_rewind(step):
            path = self.out / "log.jsonl"
            if not path.exists():
                return
            lines = path.read_text().splitlines()
            kept = [ln for ln in lines if not _logged_at_or_after(ln, stage, step)]
            if len(kept) != len(lines):
                atomic_write_text(path, "".join(ln + "\n" for ln in kept))

        ctx = RunContext(
            seed=cfg.seed, device=self.device, progress_enabled=cfg.progress, work_dir=self.out,
            cache_dir=Path(os.environ.get("PD_CACHE_DIR") or (self.out.parent / ".pd-cache")),
            model=cfg.model, model_options=self.resolved["model_options"], augmentation=cfg.augmentation,
            augmentation_options=self.resolved["augmentation_options"], precision=self.resolved["precision"],
            compile=cfg.compile, checkpoint_every=cfg.checkpoint_every, on_log=on_log, on_rewind=on_rewind,
            stage=stage, registries=self.regs, executor=self.executor,
        )
        return ctx

    def data(self):
        if self._data is None:
            entry = self.regs["dataset"].get(self.cfg.dataset)
            factory = entry.load()
            try:
                self._data = factory(self.cfg.data_root, **self.resolved["dataset_options"])
            except PdPluginsError:
                raise
            except FileNotFoundError as exc:
                raise DataError(f"dataset {entry.name!r}: {exc}") from exc
        return self._data

    def _call(self, kind: str, name: str, fn, *args, **kwargs):
        """Call a strategy; unexpected exceptions become a one-line StrategyError."""
        try:
            return fn(*args, **kwargs)
        except PdPluginsError:
            raise
        except Exception as exc:
            entry = self.regs[kind].get(name)
            raise StrategyError(f"{kind} {name!r} ({entry.origin()}) failed: {type(exc).__name__}: {exc}") from exc

    def run_prune(self, data_fp: str):
        """Returns the PruneResult (positions into the train split), computing it if needed."""
        import torch

        from pd_plugins.types import PruneResult

        train = self.data().train
        fp = self.stage_fingerprint("prune", data_fp)
        path = self.out / ARTIFACTS["prune"]
        if self.stage_done("prune", fp):
            saved = safe_torch_load(path, "prune result")
            return PruneResult(keep=saved["keep"], scores=saved["scores"], pruner=saved["pruner"],
                               options=saved["options"], meta=saved["meta"])
        ctx = self.context("prune")
        if self.cfg.subset:
            from pd_plugins.data.subset import read_subset

            result = read_subset(self.cfg.subset, train)
        elif self.pruner is None:
            result = PruneResult(keep=torch.arange(len(train)), scores=None, pruner="none")
        else:
            result = self._call("pruner", self.cfg.pruner, self.pruner.prune, train, self.resolved["keep"], ctx)
        from pd_plugins.pruning.selection import class_kl

        kept_labels = train.hard_labels[result.keep]
        result.meta = {**result.meta, "per_class_kept": torch.bincount(kept_labels, minlength=train.num_classes).tolist(),
                       "kl_to_full": class_kl(kept_labels, train.hard_labels, train.num_classes),
                       "kept": int(result.keep.numel()), "of": len(train)}
        atomic_torch_save({
            "keep": result.keep, "source_index": train.index[result.keep], "scores": result.scores,
            "pruner": result.pruner, "options": result.options, "meta": result.meta, "fingerprint": fp,
        }, path)
        from pd_plugins.pruning.report import write_prune_report

        write_prune_report(self.out, train, result)
        self._mark_done("prune", fp)
        self.host.pm.hook.on_stage_end(stage="prune", result=result, context=ctx)
        return result

    def _check_ipc(self, pool, what: str) -> None:
        counts = pool.class_counts()
        smallest = min(counts) if counts else 0
        real_init = self.distiller.uses_real_init(self.distiller.options)
        if smallest == 0:
            empty = [i for i, c in enumerate(counts) if c == 0]
            raise OptionsError(f"{what} has no samples of class(es) {empty}; keep more samples")
        if real_init and self.cfg.ipc > smallest:
            raise OptionsError(
                f"ipc {self.cfg.ipc} is larger than the smallest class after pruning ({smallest} samples); "
                "lower --ipc or raise --keep"
            )

    def init_pool(self, train, pruned):
        """Where the distiller draws its real initial images from.

        ``pool`` and ``init-random``: the whole pruned set. ``init`` (Sundar et al., Algorithm 1:
        the synthetic set is initialised to the pruned set itself): exactly ipc samples per class
        at the pruner's selection edge -- a window's lower percentile, the easy or hard end of a
        ratio -- so a distiller drawing ipc from it takes all of them; a selection without scores
        must keep exactly ipc per class.
        """
        if self.cfg.mode != "init":
            return pruned.apply(train)
        from pd_plugins.pruning.selection import selection_edge, take_at_edge

        positions = take_at_edge(pruned.scores, train.hard_labels, pruned.keep, train.num_classes, self.cfg.ipc,
                                 selection_edge(pruned.meta, pruned.scores),
                                 what=f"--mode init ({pruned.pruner} selection, ipc {self.cfg.ipc})")
        return train.subset(positions)

    def run_distill(self, data_fp: str, pruned):
        from pd_plugins.types import DistillResult

        train = self.data().train
        fp = self.stage_fingerprint("distill", data_fp)
        path = self.out / ARTIFACTS["distill"]
        if self.stage_done("distill", fp):
            saved = safe_torch_load(path, "distill result")
            return DistillResult(**{k: saved[k] for k in ("images", "labels", "ipc", "distiller", "options", "lr",
                                                           "latents", "generator", "history", "source", "meta")},
                                 zca=saved.get("zca"))
        data = pruned.apply(train) if self.cfg.mode == "pool" else train
        init_pool = self.init_pool(train, pruned)
        ctx = self.context("distill")
        try:
            result = self._call("distiller", self.cfg.distiller, self.distiller.distill, data, self.cfg.ipc, ctx, init_pool)
        except DivergenceError as exc:
            if exc.state is not None and exc.state.get("tensors"):  # last finite images or latents
                atomic_torch_save({**exc.state["tensors"], "error": str(exc)}, self.out / "diverged.pt")
            raise
        result.meta = {**result.meta, "mode": self.cfg.mode, "pool_size": len(data), "init_pool_size": len(init_pool)}
        if self.cfg.mode == "init":  # these samples are the initial synthetic images
            result.meta["init_source_index"] = init_pool.index.tolist()
        atomic_torch_save({
            "images": result.images.detach().cpu(), "labels": result.labels.detach().cpu(), "ipc": result.ipc,
            "distiller": result.distiller, "options": result.options, "lr": result.lr, "latents": result.latents,
            "generator": result.generator, "history": result.history, "source": result.source, "meta": result.meta,
            "zca": result.zca, "fingerprint": fp,
        }, path)
        self._save_grid(result.images, train, result.zca)
        self._mark_done("distill", fp)
        self.host.pm.hook.on_stage_end(stage="distill", result=result, context=ctx)
        return result

    def _save_grid(self, images, like, zca=None) -> None:
        """synthetic.png at pixel scale (ZCA-space sets are un-whitened for viewing)."""
        from pd_plugins.viz import save_image_grid
        from pd_plugins.data.zca import unit_images

        save_image_grid(unit_images(images, like, zca), self.out / "synthetic.png",
                        nrow=max(1, self.cfg.ipc) if images.shape[0] > self.cfg.ipc else 10)

    def eval_inputs(self, pruned, distilled):
        """``(train set, test set, learned lr or None, what)`` of an evaluation: the distilled set, else the
        pruned one; the test set is in the train set's space (ZCA-whitened when the set was distilled so)."""
        from pd_plugins.data.zca import in_set_space

        splits = self.data()
        if distilled is not None:
            return (distilled.as_dataset(splits.train), in_set_space(splits.test, distilled.zca), distilled.lr,
                    "distilled")
        what = "pruned" if self.pruner is not None or self.cfg.subset else "full"
        return pruned.apply(splits.train), splits.test, None, what

    def run_eval(self, data_fp: str, pruned, distilled):
        fp = self.stage_fingerprint("eval", data_fp)
        path = self.out / ARTIFACTS["eval"]
        if self.stage_done("eval", fp):
            return read_json(path, "eval result")
        train_set, test, lr, what = self.eval_inputs(pruned, distilled)
        ctx = self.context("eval")
        result = self._call("evaluator", self.cfg.evaluator, self.evaluator.evaluate, train_set, test, ctx, lr=lr)
        payload = {"evaluated": what, "train_size": len(train_set), "results": [result.to_json()],
                   "fingerprint": fp}
        atomic_write_json(path, payload)
        self._mark_done("eval", fp)
        self.host.pm.hook.on_stage_end(stage="eval", result=result, context=ctx)
        return payload

    # -- whole run ---------------------------------------------------------------------
    def execute(self, stages: tuple[str, ...] = STAGES) -> dict:
        """Run the requested stages (skipping finished ones) and return a summary dict.

        The caller's global RNG is left as it was: the run works inside ``fork_rng`` seeded
        from the run seed, and strategies draw from ``ctx.generator``/``ctx.fork_rng`` keys.
        """
        import torch

        devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with self.lock(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.cfg.seed)
            return self._execute(stages)

    @contextlib.contextmanager
    def lock(self):
        """Hold the claim on the run directory (a file beside it): one process works in a run directory at a time."""
        from pd_plugins.locks import FileLock

        claim = FileLock(self.out.parent / f".{self.out.name}.lock", what=f"run directory {self.out}")
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            claim.acquire(self.lock_wait)
        except OSError as exc:
            raise DataError(f"cannot write to output directory {self.out}: {exc.strerror or exc}") from None
        try:
            yield claim
        finally:
            claim.release()

    def _execute(self, stages: tuple[str, ...]) -> dict:
        stages = tuple(s for s in stages if not (s == "distill" and self.distiller is None)
                       and not (s == "eval" and self.evaluator is None))
        t0 = time.perf_counter()
        splits = self.data()  # before the run directory exists: bad data leaves nothing behind
        if self.cfg.subset:  # a bad subset file fails before the run directory is created
            from pd_plugins.data.subset import read_subset

            read_subset(self.cfg.subset, splits.train)
        if "distill" in stages:  # e.g. a generator's prior folder, before the run directory exists
            self.distiller.check_inputs()
            self.distiller.check_data(splits.train)
        existed_empty = self.out.is_dir() and not any(self.out.iterdir())
        fresh = existed_empty or self.overwrite or not self.out.exists()
        self.prepare_dir(stages)
        ctx = self.context("run")
        timings = {}
        pruned = distilled = evaluated = None
        try:
            self.host.pm.hook.on_run_start(config=self.config_json(), context=ctx)
            data_fp = splits.train.fingerprint()
            self.host.pm.hook.on_stage_end(stage="data", result=splits, context=ctx)
            if "prune" in stages or "distill" in stages or "eval" in stages:
                t = time.perf_counter()
                pruned = self.run_prune(data_fp)
                timings["prune"] = time.perf_counter() - t
            if "distill" in stages and not self.stage_done("distill", self.stage_fingerprint("distill", data_fp)):
                self._check_ipc(pruned.apply(splits.train), "the pruned set")
                self.init_pool(splits.train, pruned)  # init mode: a selection it cannot take ipc from fails here
        except Exception:
            if fresh:  # failed before any distillation work: leave no half-made run directory
                self._discard_dir(keep_dir=existed_empty)
            raise
        if "distill" in stages:
            t = time.perf_counter()
            distilled = self.run_distill(data_fp, pruned)
            timings["distill"] = time.perf_counter() - t
        if "eval" in stages:
            t = time.perf_counter()
            evaluated = self.run_eval(data_fp, pruned, distilled)
            timings["eval"] = time.perf_counter() - t
        summary = self.summary(splits, pruned, distilled, evaluated)
        summary["seconds"] = {k: round(v, 2) for k, v in timings.items()}
        summary["seconds"]["total"] = round(time.perf_counter() - t0, 2)
        return summary

    def summary(self, splits, pruned, distilled, evaluated) -> dict:
        out: dict[str, Any] = {
            "out": str(self.out), "dataset": self.cfg.dataset, "train_size": len(splits.train),
            "test_size": len(splits.test), "budget": self.resolved["budget"],
            "pruner": self.cfg.pruner if not self.cfg.subset else f"subset:{self.cfg.subset}",
            "keep": self.resolved["keep"], "mode": self.cfg.mode,
        }
        if pruned is not None:
            out["kept"] = int(pruned.keep.numel())
            out["kl_to_full"] = pruned.meta.get("kl_to_full")
        if distilled is not None:
            out.update({"distiller": self.cfg.distiller, "ipc": self.cfg.ipc, "synthetic": int(distilled.images.shape[0])})
            if distilled.history:
                out["final_loss"] = distilled.history[-1].get("loss")
            if distilled.lr is not None:
                out["learned_lr"] = distilled.lr
        if evaluated is not None:
            res = evaluated["results"][0]
            out.update({"evaluated": evaluated["evaluated"], "model": res["model"], "acc_mean": res["mean"],
                        "acc_std": res["std"], "repeats": len(res["accs"])})
        return out


def run(config: RunConfig, *, overwrite: bool = False, stages: tuple[str, ...] = STAGES, host=None) -> dict:
    """Run a pipeline from the Python API; returns the summary dict (see :class:`Run`)."""
    return Run(config, overwrite=overwrite, host=host).execute(stages)


def load_run_config(run_dir: str | os.PathLike) -> RunConfig:
    """The :class:`RunConfig` stored in a run directory's ``config.json``."""
    path = Path(run_dir) / "config.json"
    values = read_json(path, "run config")
    values.pop("resolved", None)
    return RunConfig.from_dict(values)
