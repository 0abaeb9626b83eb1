"""The three stages of a run, one object each: prune, distill, evaluate.

A stage knows what it depends on (:meth:`Stage.key`, hashed into its fingerprint), how to
compute its result, and how to save and load it through the result type. :meth:`Stage.get`
loads a finished result (same fingerprint, artifact present) or computes, saves and marks it
done. The stages own their order (:data:`PIPELINE`): each one's key nests its predecessor's, so a
changed input invalidates everything after it.

A stage works on a run (:class:`StageRun`: what :class:`~pd_plugins.pipeline.runner.Run` provides):
its config (``cfg``), resolved settings (``resolved``), strategies, data, contexts and run
directory (``dir``). This module does not import the runner; the runner builds its stages with
:func:`build_stages`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Protocol

from pd_plugins.errors import DeviceMemoryError, DivergenceError, OptionsError, PdPluginsError, StrategyError
from pd_plugins.types import DistillResult, PruneResult, sha256_json

if TYPE_CHECKING:  # pragma: no cover
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.context import RunContext
    from pd_plugins.pipeline.resolve import ResolvedRun
    from pd_plugins.pipeline.run_dir import RunDirectory
    from pd_plugins.types import DataSplits


def call_strategy(regs, kind: str, name: str, fn, *args, **kwargs):
    """Call a strategy's method; unexpected exceptions become a one-line StrategyError naming its origin,
    and a failed device allocation a DeviceMemoryError naming the strategy's memory options."""
    from pd_plugins.training.device import allocation_failure, is_out_of_memory

    try:
        return fn(*args, **kwargs)
    except PdPluginsError:
        raise
    except Exception as exc:
        if is_out_of_memory(exc):
            strategy = getattr(fn, "__self__", None)
            flags = strategy.memory_flags() if hasattr(strategy, "memory_flags") else []
            lower = f"; lower {', '.join(flags[:-1])} or {flags[-1]}" if len(flags) > 1 else (
                f"; lower {flags[0]}" if flags else "")
            raise DeviceMemoryError(f"{kind} {name!r} ran out of device memory ({allocation_failure(exc)}){lower}") \
                from exc
        entry = regs[kind].get(name)
        raise StrategyError(f"{kind} {name!r} ({entry.origin()}) failed: {type(exc).__name__}: {exc}") from exc


DIVERGED = "diverged.pt"  # a diverged distillation's last finite state, in its run directory


def save_diverged(exc: DivergenceError, path: Path) -> None:
    """Save the last finite state a :class:`DivergenceError` carries: its tensors (images or latents), the
    objective's state (e.g. MTT's last positive lr), ``error`` and ``divergence`` (the record: which quantity,
    at which iteration, its last finite value). The record and the message then name the file."""
    from pd_plugins.io import atomic_torch_save

    exc.record["kept"] = path.name  # relative to the run directory
    atomic_torch_save({**exc.state["tensors"], "objective": exc.state.get("objective") or {}, "error": str(exc),
                       "divergence": exc.record}, path)
    exc.args = (f"{exc}; saved to {path}",)


def checkpoint_note(ctx: "RunContext") -> str:
    """What a failed stage left to resume from: its last checkpoint (kept), or that there is none."""
    path = ctx.checkpoint_path
    if path is None or not path.exists():
        return f"no checkpoint was written (--checkpoint-every {ctx.checkpoint_every})"
    from pd_plugins.io import safe_torch_load

    iteration = safe_torch_load(path, what=f"{ctx.stage} checkpoint").get("iteration")
    return f"its last checkpoint (iteration {iteration}) is kept in {path}: the same command resumes from it"


class StageRun(Protocol):
    """What a stage uses of its run."""

    cfg: "RunConfig"
    resolved: dict
    plan: "ResolvedRun"
    regs: dict
    host: Any
    dir: "RunDirectory"
    out: Path
    pruner: Any
    distiller: Any
    evaluator: Any

    def data(self) -> "DataSplits": ...

    def context(self, stage: str) -> "RunContext": ...


class Stage:
    """One step of the pipeline and its artifact in the run directory; ``previous`` is the stage before it."""

    name: ClassVar[str]
    result_type: ClassVar[Any] = None  # a result class with ``load(path)`` (PruneResult, DistillResult)

    def __init__(self, run: StageRun, previous: Optional["Stage"] = None):
        self.run = run
        self.previous = previous

    @property
    def path(self):
        return self.run.dir.artifact(self.name)

    def key(self, data_fp: str) -> dict:
        """Everything the result depends on (JSON-able)."""
        raise NotImplementedError

    def fingerprint(self, data_fp: str) -> str:
        return sha256_json(self.key(data_fp))

    def done(self, data_fp: str) -> bool:
        return self.run.dir.stage_done(self.name, self.fingerprint(data_fp))

    def compute(self, ctx: "RunContext", *inputs) -> Any:
        raise NotImplementedError

    def save(self, result, fingerprint: str) -> Any:
        """Write ``result``; returns what :meth:`get` hands on (what :meth:`load` reads back)."""
        raise NotImplementedError

    def load(self) -> Any:
        """The finished artifact, read back through the stage's result type."""
        return self.result_type.load(self.path)

    def hook_result(self, result) -> Any:
        """What the ``on_stage_end`` hook receives."""
        return result

    def get(self, data_fp: str, *inputs) -> Any:
        """The finished result if the run directory holds it, else compute, save and mark it done
        (the manifest entry records the stage's peak CUDA memory on a GPU)."""
        from pd_plugins.training.device import PeakMemory

        fp = self.fingerprint(data_fp)
        if self.run.dir.stage_done(self.name, fp):
            return self.load()
        ctx = self.run.context(self.name)
        with PeakMemory(self.run.plan.device) as peak:
            result = self.compute(ctx, *inputs)
        value = self.save(result, fp)
        self.run.dir.mark_done(self.name, fp, peak.record())
        self.run.host.pm.hook.on_stage_end(stage=self.name, result=self.hook_result(result), context=ctx)
        return value


class PruneStage(Stage):
    """Kept positions in the train split: the pruner's, a ``--subset`` file's, or all of them."""

    name = "prune"
    result_type = PruneResult

    def key(self, data_fp: str) -> dict:
        run, cfg = self.run, self.run.cfg
        key = {"data": data_fp, "pruner": cfg.pruner, "keep": run.resolved["keep"],
               "options": run.resolved["pruner_options"], "seed": cfg.seed, "subset": run.plan.subset_sha256}
        from_context = run.pruner.context_identity(run.context("prune")) if run.pruner is not None else {}
        if from_context:  # e.g. the scorer's effective model options, inherited from the run's
            key["context"] = from_context
        return key

    def compute(self, ctx, *inputs) -> PruneResult:
        import torch

        from pd_plugins.pruning.selection import class_kl

        run, cfg = self.run, self.run.cfg
        train = run.data().train
        if cfg.subset:
            from pd_plugins.data.subset import read_subset

            result = read_subset(cfg.subset, train)
        elif run.pruner is None:
            result = PruneResult(keep=torch.arange(len(train)), scores=None, pruner="none")
        else:
            result = call_strategy(run.regs, "pruner", cfg.pruner, run.pruner.prune, train, run.resolved["keep"], ctx)
        kept_labels = train.hard_labels[result.keep]
        result.meta = {**result.meta,
                       "per_class_kept": torch.bincount(kept_labels, minlength=train.num_classes).tolist(),
                       "kl_to_full": class_kl(kept_labels, train.hard_labels, train.num_classes),
                       "kept": int(result.keep.numel()), "of": len(train)}
        result.source_index = train.index[result.keep]
        return result

    def save(self, result: PruneResult, fingerprint: str) -> PruneResult:
        from pd_plugins.pruning.report import write_prune_report

        result.save(self.path, fingerprint=fingerprint)
        write_prune_report(self.run.out, self.run.data().train, result)
        return result


class DistillStage(Stage):
    """The synthetic set, distilled from the pruned set (``pool``) or from all data seeded by it (``init*``)."""

    name = "distill"
    result_type = DistillResult

    def key(self, data_fp: str) -> dict:
        run, cfg, r = self.run, self.run.cfg, self.run.resolved
        key = {"prune": self.previous.key(data_fp), "distiller": cfg.distiller, "ipc": cfg.ipc, "mode": cfg.mode,
               "options": r["distiller_options"], "model": cfg.model, "model_options": r["model_options"],
               "augmentation": cfg.augmentation, "aug": r["augmentation_options"], "seed": cfg.seed,
               "precision": cfg.precision}
        if cfg.mode != "pool":
            key["init_select"] = r["init_select"]
        return key

    def init_pool(self, train, pruned):
        """Where the distiller draws its real initial images from.

        ``pool`` and ``init-random``: the whole pruned set. ``init`` (Sundar et al., Algorithm 1:
        the synthetic set is initialised to the pruned set itself): exactly ipc samples per class
        at the pruner's selection edge -- a window's lower percentile, the easy or hard end of a
        ratio -- so a distiller drawing ipc from it takes all of them; a selection without scores
        must keep exactly ipc per class.
        """
        ipc = self.run.cfg.ipc
        if self.run.cfg.mode != "init":
            return pruned.apply(train)
        from pd_plugins.pruning.selection import selection_edge, take_at_edge

        positions = take_at_edge(pruned.scores, train.hard_labels, pruned.keep, train.num_classes, ipc,
                                 selection_edge(pruned.meta, pruned.scores),
                                 what=f"--mode init ({pruned.pruner} selection, ipc {ipc})")
        return train.subset(positions)

    def check(self, train, pruned) -> None:
        """Fail before any distillation work when the pruned set cannot give the distiller its ipc."""
        distiller = self.run.distiller
        counts = pruned.apply(train).class_counts()
        smallest = min(counts) if counts else 0
        if smallest == 0:
            empty = [i for i, c in enumerate(counts) if c == 0]
            raise OptionsError(f"the pruned set has no samples of class(es) {empty}; keep more samples")
        if distiller.uses_real_init(distiller.options) and self.run.cfg.ipc > smallest:
            raise OptionsError(
                f"ipc {self.run.cfg.ipc} is larger than the smallest class after pruning ({smallest} samples); "
                "lower --ipc or raise --keep"
            )
        self.init_pool(train, pruned)  # init mode: a selection it cannot take ipc from fails here

    def compute(self, ctx, pruned) -> DistillResult:
        run, cfg = self.run, self.run.cfg
        train = run.data().train
        data = pruned.apply(train) if cfg.mode == "pool" else train
        init_pool = self.init_pool(train, pruned)
        try:
            result = call_strategy(run.regs, "distiller", cfg.distiller, run.distiller.distill, data, cfg.ipc, ctx,
                                   init_pool)
        except DivergenceError as exc:
            if exc.state is not None and exc.state.get("tensors"):  # last finite images or latents
                save_diverged(exc, run.out / DIVERGED)
            raise
        except DeviceMemoryError as exc:  # the checkpoint stays where a rerun of the same command resumes
            raise DeviceMemoryError(f"{exc}; {checkpoint_note(ctx)}") from exc.__cause__
        result.meta = {**result.meta, "mode": cfg.mode, "pool_size": len(data), "init_pool_size": len(init_pool)}
        if cfg.mode == "init":  # these samples are the initial synthetic images
            result.meta["init_source_index"] = init_pool.index.tolist()
        return result

    def save(self, result: DistillResult, fingerprint: str) -> DistillResult:
        """``distill.pt``, and ``synthetic.png`` at pixel scale (ZCA-space sets are un-whitened for viewing)."""
        from pd_plugins.data.zca import unit_images
        from pd_plugins.viz import save_image_grid

        result.save(self.path, fingerprint=fingerprint)
        ipc, images = self.run.cfg.ipc, result.images
        save_image_grid(unit_images(images, self.run.data().train, result.zca), self.run.out / "synthetic.png",
                        nrow=max(1, ipc) if images.shape[0] > ipc else 10)
        return result


class EvalStage(Stage):
    """Accuracy of fresh networks trained on the distilled set (else the pruned one); ``eval.json``."""

    name = "eval"

    def key(self, data_fp: str) -> dict:
        run = self.run
        key = {"distill": self.previous.key(data_fp), "evaluator": run.cfg.evaluator,
               "options": run.resolved["evaluator_options"]}
        revision = run.evaluator.protocol_revision if run.evaluator is not None else 0
        if revision:  # a changed protocol makes results of the old code stale
            key["revision"] = revision
        return key

    def inputs(self, pruned, distilled):
        """``(train set, test set, learned lr or None, what)`` of an evaluation: the distilled set, else the
        pruned one; the test set is in the train set's space (ZCA-whitened when the set was distilled so)."""
        from pd_plugins.data.zca import in_set_space

        run = self.run
        splits = run.data()
        if distilled is not None:
            return (distilled.as_dataset(splits.train), in_set_space(splits.test, distilled.zca), distilled.lr,
                    "distilled")
        what = "pruned" if run.pruner is not None or run.cfg.subset else "full"
        return pruned.apply(splits.train), splits.test, None, what

    def real_split(self, distilled):
        """The real training split in the evaluated set's space (whitened when the set was distilled so): what
        an evaluator with ``labels=teacher`` trains its teacher on."""
        from pd_plugins.data.zca import in_set_space

        return in_set_space(self.run.data().train, distilled.zca if distilled is not None else None)

    def compute(self, ctx, pruned, distilled) -> tuple:
        from pd_plugins.training.teacher import teacher_inputs

        train_set, test, lr, what = self.inputs(pruned, distilled)
        run = self.run
        result = call_strategy(run.regs, "evaluator", run.cfg.evaluator, run.evaluator.evaluate, train_set, test, ctx,
                               lr=lr, **teacher_inputs(run.evaluator, ctx, lambda: self.real_split(distilled)))
        return result, what, len(train_set)

    def hook_result(self, result):
        return result[0]

    def save(self, result, fingerprint: str) -> dict:
        from pd_plugins.io import atomic_write_json

        evaluated, what, train_size = result
        payload = {"evaluated": what, "train_size": train_size, "results": [evaluated.to_json()],
                   "fingerprint": fingerprint}
        atomic_write_json(self.path, payload)
        return payload

    def load(self) -> dict:
        from pd_plugins.io import read_json

        return read_json(self.path, "eval result")


#: the stages of a run in pipeline order; each one's key nests its predecessor's
PIPELINE = (PruneStage, DistillStage, EvalStage)
#: their names, the order ``Run.execute`` takes stages in
STAGES = tuple(cls.name for cls in PIPELINE)


def build_stages(run: StageRun) -> dict[str, Stage]:
    """``name -> stage`` of ``run``, in pipeline order, each stage linked to the one before it."""
    stages: dict[str, Stage] = {}
    previous = None
    for cls in PIPELINE:
        previous = stages[cls.name] = cls(run, previous)
    return stages
