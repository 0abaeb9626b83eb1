"""Base classes of the strategies plugins provide.

A strategy is a class with a kebab-case ``name``, an ``Options`` dataclass (paper defaults)
and optional ``budgets``: named, scaled-down option overrides. The host knows the budgets in
:data:`BUDGETS`: ``paper`` (the defaults), ``quick`` (smoke-sized, about a minute on the embedded
digits set) and ``cpu`` (tuned for accuracy per CPU-minute, at most about 15 minutes per run on 2
cores), which starts from ``quick``'s overrides and adds its own (:data:`BUDGET_BASE`). The host
resolves options as paper defaults < budget < user values and records the result in the run's
``config.json``.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, Optional

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from pd_plugins.pipeline.context import RunContext
    from pd_plugins.planning.costs import StageCost
    from pd_plugins.types import DistillResult, ImageDataset, PruneResult


#: The budgets a run may name (``--budget``), besides ``auto``.
BUDGETS = ("paper", "quick", "cpu")
#: A budget that starts from another's overrides before adding its own.
BUDGET_BASE = {"cpu": "quick"}


def budget_chain(budget: Optional[str]) -> list[str]:
    """The budgets whose overrides ``budget`` applies, base first (``cpu`` -> ``["quick", "cpu"]``)."""
    if not budget or budget == "paper":
        return []
    return budget_chain(BUDGET_BASE.get(budget)) + [budget]


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A strategy without options."""


class Strategy:
    """Common part of pruners, distillers and evaluators."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    budgets: ClassVar[dict[str, dict[str, Any]]] = {}
    memory_options: ClassVar[tuple[str, ...]] = ()
    """Options that lower the strategy's peak device memory, most effective first: the host names
    them when a run of it runs out of memory (:meth:`memory_flags`)."""

    def __init__(self, options=None):
        self.options = options if options is not None else self.Options()

    @classmethod
    def resolve_options(cls, values: Optional[dict] = None, budget: Optional[str] = None):
        """Paper defaults, then the budget's overrides, then ``values`` (user wins)."""
        from pd_plugins.options import coerce

        merged = cls.budget_overrides(budget)
        merged.update({k.replace("-", "_"): v for k, v in (values or {}).items()})
        return coerce(cls.Options, merged, what=f"{cls.kind()} {cls.name!r}")

    @classmethod
    def budget_overrides(cls, budget: Optional[str]) -> dict[str, Any]:
        """The option overrides ``budget`` applies: its base budget's, then its own (``cpu``: quick + cpu)."""
        if budget and budget not in BUDGETS:
            from pd_plugins.errors import OptionsError

            raise OptionsError(f"unknown budget {budget!r}; use one of {', '.join(BUDGETS)}")
        merged: dict[str, Any] = {}
        for name in budget_chain(budget):
            merged.update(cls.budgets.get(name, {}))
        return merged

    @classmethod
    def kind(cls) -> str:
        return "strategy"

    def check_inputs(self) -> None:
        """Check the files and folders the options name (raise DataError), before a run directory exists."""

    def memory_flags(self) -> list[str]:
        """The ``pd-run`` flags that lower this strategy's device memory (:attr:`memory_options`)."""
        flag = {"pruner": "-P", "distiller": "-D", "evaluator": "-E"}.get(self.kind(), "-D")
        return [f"{flag} {name}" for name in self.memory_options]


#: the pipeline modes a pruner may declare as its paper's (``Pruner.paper_mode``)
PAPER_MODES = ("pool", "init", "init-random")


class Pruner(Strategy):
    """Selects a subset of a dataset: ``prune(data, keep, ctx) -> PruneResult``."""

    paper_mode: ClassVar[str] = "pool"
    """How the pruner's paper uses the pruned set, the mode ``--mode auto`` (the default) runs:
    ``pool`` (the pruned set replaces the real pool: Moser et al., Xu et al.) or ``init`` (it only
    chooses the initial synthetic images; experts and matching use the full set: Sundar et al.).
    A declared contract the host reads before any work, like :meth:`implied_keep`."""

    @classmethod
    def kind(cls) -> str:
        return "pruner"

    def prune(self, data: "ImageDataset", keep: float, ctx: "RunContext") -> "PruneResult":
        raise NotImplementedError

    def context_identity(self, ctx: "RunContext") -> dict:
        """What the result takes from ``ctx`` beyond the data, options, keep and seed (e.g. a
        scorer's effective model and options); part of the host's prune-stage fingerprint."""
        return {}

    @classmethod
    def implied_keep(cls, options) -> Optional[float]:
        """The kept fraction these options fix by themselves (a percentile window), or None
        when ``--keep`` decides; the host rejects a ``--keep`` that disagrees."""
        return None

    def cost(self, data: "ImageDataset", keep: float, ctx: "RunContext") -> "Optional[list[StageCost]]":
        """What :meth:`prune` with these arguments costs (``pd-run plan``, the pre-run memory check):
        the stage's network passes, resident tensors and timed units (:mod:`pd_plugins.planning.costs`).
        None (the default): not declared, so the stage is reported without an estimate."""
        return None


class ScorePruner(Pruner):
    """A pruner that scores every sample, then selects per class (or globally).

    Subclasses implement :meth:`score` (one float per sample), optionally :meth:`score_key`
    (what besides the data decides the scores: then :meth:`prune` reads and fills the on-disk
    score cache through :meth:`cached_score`) and :meth:`selection`, the settings of the shared
    class-balanced selection step.
    """

    def score(self, data: "ImageDataset", ctx: "RunContext") -> "torch.Tensor":
        """(N,) scores, one per sample of ``data`` (low = easy)."""
        raise NotImplementedError

    def score_key(self, ctx: "RunContext") -> Optional[dict]:
        """JSON-able description of everything but the data, the seed, the stage, the precision and the
        device that decides :meth:`score`'s output (e.g. the options it reads); None (the default)
        means the scores are never cached."""
        return None

    def cached_score(self, data: "ImageDataset", ctx: "RunContext") -> "tuple[torch.Tensor, dict]":
        """``(scores, meta)``: :meth:`score` through the score cache under ``ctx.cache_dir`` (or
        ``PD_CACHE_DIR``) when :meth:`score_key` gives a key; ``meta["cache"]`` is hit, miss or off."""
        key = self.score_key(ctx)
        if key is None:
            return self.score(data, ctx), {"cache": "off"}
        from pd_plugins.pruning.score_cache import cached_scores

        identity = {"data": data.fingerprint(), "pruner": self.name, "score_key": key, "seed": ctx.seed,
                    "stage": ctx.stage, "precision": ctx.precision, "device": str(ctx.device).split(":")[0]}
        return cached_scores(ctx, identity, len(data), lambda: self.score(data, ctx), what=f"{self.name} scores")

    def selection(self, keep: float) -> dict:
        """Keyword arguments for :func:`pd_plugins.pruning.selection.select` (direction, window, ...)."""
        return {"keep": keep, "direction": "easy", "balanced": True}

    def prune(self, data: "ImageDataset", keep: float, ctx: "RunContext") -> "PruneResult":
        from pd_plugins.pruning.selection import select
        from pd_plugins.types import PruneResult
        from pd_plugins.options import as_dict

        scores, scoring = self.cached_score(data, ctx)
        sel = self.selection(keep)
        kept, meta = select(scores, data.hard_labels, data.num_classes, **sel)
        return PruneResult(keep=kept, scores=scores.float().cpu(), pruner=self.name, options=as_dict(self.options),
                           meta={**meta, "scoring": scoring})


class Distiller(Strategy):
    """Builds a synthetic set: ``distill(data, ipc, ctx, init_pool) -> DistillResult``.

    ``data`` is the real pool the distiller matches against; ``init_pool`` is where real
    initial images are drawn from (the pruned set in both pipeline modes; it equals
    ``data`` in the default ``pool`` mode).
    """

    recommended_keep: ClassVar[Optional[float]] = None
    """The keep ratio the papers found best for this method (Moser et al.), used when
    ``--keep`` is not given; None means the host's neutral default (0.5)."""

    @classmethod
    def kind(cls) -> str:
        return "distiller"

    def memory_flags(self) -> list[str]:
        """The options' memory knobs, then ``--ipc`` (the synthetic set itself)."""
        return super().memory_flags() + ["--ipc"]

    @classmethod
    def recommended_keep_for(cls, options) -> Optional[float]:
        """The recommended keep ratio for these options (a latent distiller's follows its
        objective); the class's ``recommended_keep`` by default."""
        return cls.recommended_keep

    def check_data(self, data: "ImageDataset") -> None:
        """Check what the options name against the dataset's geometry (channels, size, classes; raise
        DataError), after the data loads and before a run directory exists."""

    @classmethod
    def uses_real_init(cls, options) -> bool:
        """Whether the method starts from ipc real images per class with these options (so every
        class of the initial pool must hold at least ipc samples). True by default; a distiller
        with an ``init`` option (real or noise) answers for it."""
        return True

    @classmethod
    def starts_from_chosen_set(cls, options) -> bool:
        """Whether the method can start from a set of real images the pruner chose (mode ``init``):
        :meth:`uses_real_init` by default; a distiller that selects real images itself says False."""
        return cls.uses_real_init(options)

    def distill(
        self,
        data: "ImageDataset",
        ipc: int,
        ctx: "RunContext",
        init_pool: Optional["ImageDataset"] = None,
    ) -> "DistillResult":
        raise NotImplementedError

    def cost(self, data: "ImageDataset", ipc: int, ctx: "RunContext",
             init_pool: Optional["ImageDataset"] = None) -> "Optional[list[StageCost]]":
        """What :meth:`distill` with these arguments costs, one :class:`~pd_plugins.planning.costs.StageCost`
        per stage it runs (MTT: ``experts`` and ``distill``). None (the default): not declared, and
        ``pd-run plan`` times :meth:`distill` at 1 and 2 iterations instead when the options have
        ``iterations`` (a probe-only estimate, without memory)."""
        return None


class Evaluator(Strategy):
    """Trains fresh networks on a set and tests them: ``evaluate(train, test, ctx, lr=None)``.

    ``protocol_revision``: raise it when the protocol's code changes what it computes for the
    same options; it enters the evaluation's fingerprint, so older results count as stale.
    """

    protocol_revision: ClassVar[int] = 0

    @classmethod
    def kind(cls) -> str:
        return "evaluator"

    def evaluate(self, train: "ImageDataset", test: "ImageDataset", ctx: "RunContext", *, lr=None, model=None, repeats=1):
        raise NotImplementedError

    def cost(self, train: "ImageDataset", test: "ImageDataset", ctx: "RunContext", *,
             lr=None) -> "Optional[list[StageCost]]":
        """What :meth:`evaluate` with these arguments costs (see :meth:`Pruner.cost`); None: not declared."""
        return None
